//! What monitoring-rs costs on a node, end to end: files → collector →
//! store → query, with the real binary as a child process on a stand-in
//! node (the fake API server and the kubelet-like writer from `testkit`).
//!
//! Scenarios: a quiet node, a busy node (with queries under load), and a
//! catch-up of a backlog. Each one checks that the store holds exactly the
//! lines written (count and checksum per stream). Prints a table and writes
//! `target/bench/report.json` and `target/bench/busy.svg`.
//!
//! `BENCH_SMOKE=1` runs every scenario for a few seconds at small scale:
//! correctness only, no targets (CI runs it).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monitoring_rs::log_database::query::{Matcher, Query};
use monitoring_rs::log_database::{Config, Database, now_ns};
use serde_json::{Value, json};
use testkit::api_server::FakeApiServer;
use testkit::apps::{App, PROFILES};
use testkit::daemon::{Daemon, DaemonCommand};
use testkit::kubelet::{Container, Node};
use testkit::messages::Rng;
use xxhash_rust::xxh3::xxh3_64;

fn smoke() -> bool {
    std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1")
}

/// What was written to one container, per stream: lines and a running hash.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
struct Written {
    lines: u64,
    hash: u64,
}

impl Written {
    fn add(&mut self, line: &[u8]) {
        self.lines += 1;
        self.hash = xxh3_64(&[self.hash.to_le_bytes().as_slice(), line].concat());
    }
}

/// A container, the application logging in it, and what was written to
/// it, per stream.
struct Slot {
    pod: String,
    name: String,
    container: Container,
    app: App,
    last_ts: i64,
    /// File bytes written so far (CRI framing included), for the lag.
    file_bytes: u64,
    written: BTreeMap<&'static str, Written>,
}

impl Slot {
    /// Writes the application's next line; returns its length and the
    /// CRI records it took (lines over 16 KiB are written in pieces).
    fn log(&mut self, line: &mut Vec<u8>) -> (usize, u64) {
        // Strictly increasing per container: the store orders by timestamp.
        let ts = now_ns().max(self.last_ts + 1);
        self.last_ts = ts;
        let stream = self.app.line(ts, line);
        // "<RFC 3339 ns> <stream> P|F <piece>\n" per 16 KiB piece.
        let pieces = line.len().div_ceil(16 * 1024).max(1);
        self.file_bytes += (pieces * (30 + 1 + stream.len() + 3 + 1) + line.len()) as u64;
        self.container.write(stream, ts, line).unwrap();
        self.written.entry(stream).or_default().add(line);
        (line.len(), pieces as u64)
    }
}

/// The daemon on the stand-in node, its logs discarded (they would skew
/// the figures).
fn start_daemon(node: &Node, kubeconfig: &Path, data: &Path) -> Daemon {
    DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .kubernetes(node, kubeconfig, data)
        // This measures collection; access control has its own bench.
        .args(["--auth", "none"])
        .log("error")
        .quiet()
        .start()
}

/// CPU seconds, voluntary context switches, RSS and peak RSS (MiB) of `pid`.
fn sample(pid: u32) -> (f64, u64, f64, f64) {
    let cpu = stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Wake-ups of every thread, not just the first.
    let wakeups: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
                .filter_map(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .sum()
        })
        .unwrap_or(0);
    (
        cpu,
        wakeups,
        field("VmRSS:") / 1024.0,
        field("VmHWM:") / 1024.0,
    )
}

/// The CPU seconds (user + system) in a `/proc/…/stat` line.
fn stat_cpu(stat: &str) -> f64 {
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (field(11) + field(12)) / hz
}

/// CPU seconds of the threads of `pid` whose name starts with `prefix`.
fn threads_cpu(pid: u32, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| {
            stat.split_once('(')
                .is_some_and(|(_, rest)| rest.starts_with(prefix))
        })
        .map(|stat| stat_cpu(&stat))
        .sum()
}

fn get_json(client: &reqwest::blocking::Client, url: &str) -> Value {
    client
        .get(url)
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null)
}

/// Checks that the store holds exactly what was written, per stream.
fn verify(data: &Path, slots: &[Slot]) -> Result<u64, String> {
    let (db, _) = Database::open(data, Config::default()).map_err(|e| e.to_string())?;
    let mut total = 0;
    for slot in slots {
        for (stream, written) in &slot.written {
            let q = Query::new(vec![
                Matcher::equal("pod_name", &slot.pod),
                Matcher::equal("container_name", &slot.name),
                Matcher::equal("stream", stream),
            ]);
            let mut got = Written::default();
            for e in db.query(q).map_err(|e| e.to_string())? {
                got.add(&e.line);
            }
            if got != *written {
                return Err(format!(
                    "pod {} container {} {stream}: stored {} lines, wrote {} (checksums {})",
                    slot.pod,
                    slot.name,
                    got.lines,
                    written.lines,
                    if got.hash == written.hash {
                        "equal"
                    } else {
                        "differ"
                    }
                ));
            }
            total += got.lines;
        }
    }
    Ok(total)
}

struct Cluster {
    _dir: tempfile::TempDir,
    node: Node,
    api: FakeApiServer,
    kubeconfig: PathBuf,
    data: PathBuf,
    serial: usize,
    /// Whether new pods are made known to the API server.
    register_pods: bool,
}

/// What the API server can say about the backlog's pods.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Metadata {
    /// It knows every pod.
    Available,
    /// It answers, but knows none of them (pods deleted long ago).
    Unknown,
    /// It cannot be reached at all.
    Unreachable,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(&dir.path().join("node")).unwrap();
        let api = FakeApiServer::start();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let data = dir.path().join("data");
        Self {
            _dir: dir,
            node,
            api,
            kubeconfig,
            data,
            serial: 0,
            register_pods: true,
        }
    }

    /// Points the daemon at an address where no API server answers.
    fn make_api_unreachable(&self) {
        let gone = FakeApiServer::start();
        gone.write_kubeconfig(&self.kubeconfig).unwrap();
        drop(gone);
    }

    /// Starts a pod with `containers` containers; returns its slots.
    fn pod(&mut self, containers: usize) -> Vec<Slot> {
        self.serial += 1;
        let name = format!("app-{:05}", self.serial);
        let uid = format!("uid-{:05}", self.serial);
        if self.register_pods {
            self.api.add_pod(
                "bench",
                &name,
                &uid,
                "node-1",
                &[("app", &format!("app-{}", self.serial % 7))],
            );
        }
        let serial = self.serial;
        (0..containers)
            .map(|c| Slot {
                // Pods of ten kinds of application, one kind a pod.
                app: App::new(PROFILES[serial % PROFILES.len()], (serial * 8 + c) as u64),
                pod: name.clone(),
                name: format!("c{c}"),
                container: self
                    .node
                    .start("bench", &name, &uid, &format!("c{c}"))
                    .unwrap(),
                last_ts: 0,
                file_bytes: 0,
                written: BTreeMap::new(),
            })
            .collect()
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// Writes `rate` lines/s over `slots` (skewed) for `seconds`, calling
/// `each_second` once a second.
fn drive(
    slots: &mut [Slot],
    rate: f64,
    seconds: f64,
    rng: &mut Rng,
    mut each_second: impl FnMut(&mut [Slot], u64),
) -> u64 {
    let start = Instant::now();
    let tick = Duration::from_millis(10);
    let (mut next, mut carry, mut written, mut second) = (Instant::now(), 0.0, 0u64, 0u64);
    let mut line = Vec::with_capacity(512);
    while start.elapsed().as_secs_f64() < seconds {
        carry += rate / 100.0;
        while carry >= 1.0 {
            carry -= 1.0;
            let u = rng.below(1 << 20) as f64 / (1u64 << 20) as f64;
            let k = ((u * (slots.len() as f64 + 1.0).ln()).exp() as usize)
                .saturating_sub(1)
                .min(slots.len() - 1);
            slots[k].log(&mut line);
            written += 1;
        }
        if start.elapsed().as_secs() > second {
            second += 1;
            each_second(slots, second);
        }
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    written
}

/// What the machine itself charges a thread for waking up after 100 ms
/// asleep (its own CPU time, from the scheduler): on some virtual machines
/// this is a millisecond rather than microseconds, and then the quiet
/// node's figure measures the machine, not the daemon.
fn machine() -> Value {
    let runtime_ns = || -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let wakeups = if smoke() { 5 } else { 30 };
    let charged = std::thread::spawn(move || {
        let before = runtime_ns();
        for _ in 0..wakeups {
            std::thread::sleep(Duration::from_millis(100));
        }
        runtime_ns() - before
    })
    .join()
    .unwrap_or(0);
    json!({"cpu_us_per_idle_wakeup": charged as f64 / 1e3 / wakeups as f64})
}

fn quiet(report: &mut BTreeMap<&'static str, Value>) {
    let seconds = if smoke() { 5.0 } else { 60.0 };
    let mut cluster = Cluster::new();
    let mut slots: Vec<Slot> = (0..20).flat_map(|_| cluster.pod(1)).collect();
    let daemon = start_daemon(&cluster.node, &cluster.kubeconfig, &cluster.data);
    std::thread::sleep(Duration::from_secs(2));
    let (cpu0, ctx0, _, _) = sample(daemon.pid());
    let mut rng = Rng(7);
    // 20 lines a minute; in smoke mode a little more so something is stored.
    let rate = if smoke() { 2.0 } else { 20.0 / 60.0 };
    drive(&mut slots, rate, seconds, &mut rng, |_, _| {});
    let (cpu1, ctx1, rss, hwm) = sample(daemon.pid());
    std::thread::sleep(Duration::from_secs(6));
    daemon.terminate();
    let stored = verify(&cluster.data, &slots).unwrap_or_else(|e| panic!("quiet node: {e}"));
    let per_minute = (cpu1 - cpu0) / seconds * 60.0;
    report.insert("quiet", json!({
        "seconds": seconds, "lines": stored, "cpu_seconds_per_minute": per_minute,
        "wakeups_per_minute": (ctx1 - ctx0) as f64 / seconds * 60.0, "rss_mib": rss, "peak_rss_mib": hwm,
        "targets": {"cpu_seconds_per_minute": 0.05, "rss_mib": 16}
    }));
}

fn busy(report: &mut BTreeMap<&'static str, Value>, out: &Path) {
    let (seconds, rate, pods) = if smoke() {
        (4.0, 5_000.0, 20)
    } else {
        (60.0, 50_000.0, 100)
    };
    let mut cluster = Cluster::new();
    let mut slots: Vec<Slot> = (0..pods).flat_map(|_| cluster.pod(5)).collect();
    let daemon = start_daemon(&cluster.node, &cluster.kubeconfig, &cluster.data);
    let client = reqwest::blocking::Client::new();
    std::thread::sleep(Duration::from_secs(2));

    // A follower measures file write → arrival on one hot container.
    let follow_latency = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (url, latencies, stop) = (
            format!(
                "{}/logs/pod_name/{}?follow=true&format=ndjson&limit=0",
                daemon.base(),
                slots[0].pod
            ),
            follow_latency.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            use std::io::BufRead;
            let Ok(response) = reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .unwrap()
                .get(url)
                .send()
            else {
                return;
            };
            for line in std::io::BufReader::new(response).lines() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(line) = line else { break };
                if let Ok(row) = serde_json::from_str::<Value>(&line)
                    && let Some(ts) = row["timestamp"]
                        .as_str()
                        .and_then(|t| t.parse::<i64>().ok())
                {
                    latencies.lock().unwrap().push((now_ns() - ts) as f64 / 1e6);
                }
            }
        })
    };
    let mut timeline: Vec<(f64, f64, f64)> = Vec::new();
    let (mut lag, mut rss_samples) = (Vec::new(), Vec::new());
    let (cpu0, ctx0, _, _) = sample(daemon.pid());
    let mut last_cpu = cpu0;
    let mut last_file_bytes: u64 = slots.iter().map(|s| s.file_bytes).sum();
    let mut rng = Rng(11);
    let mut churned: Vec<(Instant, String)> = Vec::new();
    let mut each_second = |slots: &mut [Slot],
                           second: u64,
                           timeline: &mut Vec<(f64, f64, f64)>,
                           lag: &mut Vec<f64>| {
        let (cpu, _, rss, _) = sample(daemon.pid());
        timeline.push((timeline.len() as f64 + 1.0, (cpu - last_cpu) * 100.0, rss));
        last_cpu = cpu;
        rss_samples.push(rss);
        let status = get_json(&client, &format!("{}/status", daemon.base()));
        // Lag in seconds of input: unread bytes over what the writers wrote
        // in the last second.
        let file_bytes: u64 = slots.iter().map(|s| s.file_bytes).sum();
        let input_per_second = (file_bytes - last_file_bytes).max(1) as f64;
        last_file_bytes = file_bytes;
        lag.push(status["collector"]["lag_bytes"].as_f64().unwrap_or(0.0) / input_per_second);
        for slot in slots.iter_mut() {
            // kubelet rotation at 10 MiB.
            if slot.container.size().unwrap_or(0) >= 10 << 20 {
                slot.container.rotate().unwrap();
            }
        }
        if second.is_multiple_of(10) && !smoke() {
            // Churn: a pod goes away (its files stay while it drains).
            let gone = slots[(second / 10) as usize % slots.len()].pod.clone();
            cluster.api.delete_pod("bench", &gone);
            churned.push((Instant::now(), gone));
        }
    };
    // Ingestion alone: what a busy node costs.
    let mut written = drive(&mut slots, rate, seconds, &mut rng, |slots, second| {
        each_second(slots, second, &mut timeline, &mut lag)
    });
    let (cpu1, ctx1, steady_rss, _) = sample(daemon.pid());

    // Then queries under load: label + time range, with and without a filter.
    let query_latency = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..20)
        .map(|c| {
            let (base, latencies, stop, pod) = (
                daemon.base(),
                query_latency.clone(),
                stop.clone(),
                slots[c * 5 % slots.len()].pod.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let query = if i % 2 == 0 {
                        format!("{{pod_name=\"{pod}\"}}")
                    } else {
                        format!("{{pod_name=\"{pod}\"}} |= \"error\"")
                    };
                    let t = Instant::now();
                    let ok = client
                        .get(format!("{base}/loki/api/v1/query_range"))
                        .query(&[("query", query.as_str()), ("since", "5m"), ("limit", "100")])
                        .send()
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        latencies
                            .lock()
                            .unwrap()
                            .push((i % 2 == 0, t.elapsed().as_secs_f64() * 1e3));
                    }
                }
            })
        })
        .collect();

    let mut lag_under_queries = Vec::new();
    written += drive(
        &mut slots,
        rate,
        (seconds / 3.0).max(2.0),
        &mut rng,
        |slots, second| each_second(slots, second, &mut timeline, &mut lag_under_queries),
    );
    let (_, _, _, peak_rss) = sample(daemon.pid());
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    std::thread::sleep(Duration::from_secs(8));
    let status = get_json(&client, &format!("{}/status", daemon.base()));
    daemon.terminate();
    let _ = follower.join();
    let stored = verify(&cluster.data, &slots).unwrap_or_else(|e| panic!("busy node: {e}"));
    assert_eq!(stored, written, "busy node: every line stored");
    let ingest_only = (rate * seconds).min(written as f64);
    let cpu_per_million = (cpu1 - cpu0) / (ingest_only / 1e6);
    let mut follow = follow_latency.lock().unwrap().clone();
    let timed = query_latency.lock().unwrap().clone();
    let mut queries: Vec<f64> = timed.iter().map(|q| q.1).collect();
    let kind = |filtered: bool| {
        let mut ms: Vec<f64> = timed
            .iter()
            .filter(|q| q.0 != filtered)
            .map(|q| q.1)
            .collect();
        json!({"p50_ms": percentile(&mut ms, 0.5), "p99_ms": percentile(&mut ms, 0.99)})
    };
    let stored_ratio = status["store"]["bytes_stored"].as_f64().unwrap_or(0.0)
        / status["store"]["bytes_raw"].as_f64().unwrap_or(1.0);
    let mut lag_sorted = lag.clone();
    report.insert("busy", json!({
        "seconds": seconds, "streams": slots.len() * 2, "lines": written, "lines_per_second": ingest_only / seconds,
        "cpu_seconds_per_million_lines": cpu_per_million, "peak_rss_mib": peak_rss, "steady_rss_mib": steady_rss,
        "lag_seconds_p50": percentile(&mut lag_sorted, 0.5), "lag_seconds_p99": percentile(&mut lag_sorted, 0.99),
        "lag_seconds_max": lag.iter().cloned().fold(0.0, f64::max),
        "write_to_query_ms_p50": percentile(&mut follow, 0.5), "write_to_query_ms_p99": percentile(&mut follow, 0.99),
        "stored_per_raw_byte": stored_ratio,
        "wakeups_per_second": (ctx1 - ctx0) as f64 / seconds,
        "targets": {"cpu_seconds_per_million_lines": 2.0, "rss_mib": 48, "write_to_query_ms_p99": 100, "lag_seconds_max": 1.0}
    }));
    report.insert("query_under_load", json!({
        "clients": 20, "queries": queries.len(), "p50_ms": percentile(&mut queries, 0.5), "p99_ms": percentile(&mut queries, 0.99),
        "ingest_lag_seconds_max": lag_under_queries.iter().cloned().fold(0.0, f64::max),
        "selector_only": kind(false), "with_line_filter": kind(true),
        "targets": {"p99_ms": 20}
    }));
    chart(&timeline, &out.join("busy.svg"));
}

/// Counts the entries a sink delivers (decoded with the official types).
fn counting_receiver() -> (SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    use prost::Message;
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (otlp, loki) = (count.clone(), count.clone());
    let app = axum::Router::new()
        .route(
            "/v1/logs",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                let raw = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
                    out
                } else {
                    body.to_vec()
                };
                let request = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::decode(raw.as_slice()).unwrap();
                let n: usize = request.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
                otlp.fetch_add(n as u64, Ordering::Relaxed);
                axum::http::StatusCode::OK
            }),
        )
        .route(
            "/loki/api/v1/push",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                let request = monitoring_rs::forward::loki::proto::PushRequest::decode(raw.as_slice()).unwrap();
                let n: usize = request.streams.iter().map(|s| s.entries.len()).sum();
                loki.fetch_add(n as u64, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }),
        );
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, app).await;
        });
    });
    (address, count)
}

/// The busy node's load with no sink, one sink (OTLP) and both: CPU per
/// million lines, and every line delivered to each sink.
fn forward(report: &mut BTreeMap<&'static str, Value>) {
    let (seconds, rate, pods) = if smoke() {
        (3.0, 5_000.0, 20)
    } else {
        (30.0, 50_000.0, 100)
    };
    let mut rows = Vec::new();
    for sinks in 0..3usize {
        let mut cluster = Cluster::new();
        let mut slots: Vec<Slot> = (0..pods).flat_map(|_| cluster.pod(5)).collect();
        let (at, delivered) = counting_receiver();
        let mut command = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
            .kubernetes(&cluster.node, &cluster.kubeconfig, &cluster.data)
            .args(["--auth", "none"]);
        if sinks >= 1 {
            command = command.args([format!("--otlp-endpoint=http://{at}")]);
        }
        if sinks >= 2 {
            command = command.args([format!("--loki-push-url=http://{at}/loki/api/v1/push")]);
        }
        let daemon = command.log("error").quiet().start();
        std::thread::sleep(Duration::from_secs(2));
        let (cpu0, _, _, _) = sample(daemon.pid());
        let mut rng = Rng(21);
        let written = drive(&mut slots, rate, seconds, &mut rng, |_, _| {});
        // Every line reaches every sink.
        let deadline = Instant::now() + Duration::from_secs(60);
        while delivered.load(Ordering::Relaxed) < written * sinks as u64 {
            assert!(
                Instant::now() < deadline,
                "{sinks} sinks: delivered {} of {}",
                delivered.load(Ordering::Relaxed),
                written * sinks as u64
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Measured once everything is delivered: a sink's work after the
        // input stops counts too.
        let (cpu1, _, rss, _) = sample(daemon.pid());
        let sink_cpu = threads_cpu(daemon.pid(), "forward-");
        daemon.terminate();
        let millions = written as f64 / 1e6;
        rows.push(json!({
            "sinks": sinks, "lines": written,
            "cpu_seconds_per_million_lines": (cpu1 - cpu0) / millions,
            "sink_threads_cpu_seconds_per_million_lines": sink_cpu / millions,
            "sink_threads_cores_at_50k_lines_per_second": sink_cpu / millions * 0.05,
            "rss_mib": rss, "delivered": delivered.load(Ordering::Relaxed),
        }));
    }
    report.insert("forward", json!(rows));
}

fn catch_up(report: &mut BTreeMap<&'static str, Value>, metadata: Metadata) {
    let bytes_target: u64 = if smoke() { 16 << 20 } else { 1 << 30 };
    let mut cluster = Cluster::new();
    cluster.register_pods = metadata == Metadata::Available;
    if metadata == Metadata::Unreachable {
        cluster.make_api_unreachable();
    }
    let mut slots: Vec<Slot> = (0..200).flat_map(|_| cluster.pod(1)).collect();
    let (mut written_bytes, mut lines) = (0u64, 0u64);
    let mut line = Vec::with_capacity(512);
    let mut i = 0;
    // Round robin: 200 files of about 5 MiB, under the kubelet's 10 MiB
    // rotation size.
    let mut records = 0u64;
    while written_bytes < bytes_target {
        let (len, pieces) = slots[i % 200].log(&mut line);
        written_bytes += len as u64 + 40;
        records += pieces;
        lines += 1;
        i += 1;
    }
    let file_bytes: u64 = slots.iter().map(|s| s.container.size().unwrap_or(0)).sum();
    let started = Instant::now();
    let daemon = start_daemon(&cluster.node, &cluster.kubeconfig, &cluster.data);
    let client = reqwest::blocking::Client::new();
    let mut peak = 0.0f64;
    let cpu = loop {
        std::thread::sleep(Duration::from_millis(100));
        let (cpu, _, _, hwm) = sample(daemon.pid());
        peak = peak.max(hwm);
        let status = get_json(&client, &format!("{}/status", daemon.base()));
        // The collector counts CRI records, pieces included.
        if status["collector"]["lines_total"].as_u64() == Some(records) {
            break cpu;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "catch-up did not finish: {} of {records} records read",
            status["collector"]["lines_total"]
        );
    };
    let took = started.elapsed().as_secs_f64();
    daemon.terminate();
    let stored = verify(&cluster.data, &slots).unwrap_or_else(|e| panic!("catch-up: {e}"));
    assert_eq!(stored, lines);
    let disk = if metadata == Metadata::Available {
        let on_disk = directory_bytes(&cluster.data) as f64;
        let files: Vec<PathBuf> = slots
            .iter()
            .map(|s| s.container.link().to_path_buf())
            .collect();
        let (zstd3, zstd19) = zstd_ratios(&files);
        json!({"stored_per_raw_byte": on_disk / file_bytes as f64, "zstd_3": zstd3, "zstd_19": zstd19})
    } else {
        Value::Null
    };
    let key = match metadata {
        Metadata::Available => "catch_up",
        Metadata::Unknown => "catch_up_pods_unknown",
        Metadata::Unreachable => "catch_up_api_unreachable",
    };
    report.insert(key, json!({
        "file_bytes": file_bytes, "lines": lines, "seconds": took, "mb_per_second": file_bytes as f64 / took / 1e6,
        "cpu_seconds_per_gb": cpu / (file_bytes as f64 / 1e9), "peak_rss_mib": peak, "disk": disk,
        "targets": {"mb_per_second": 400, "cpu_seconds_per_gb": 3.0, "peak_rss_mib": 96, "stored_per_raw_byte": 0.16}
    }));
}

/// Bytes in the files under `dir`.
fn directory_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => directory_bytes(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// What `zstd -3` makes of each file (compressed over raw, all files) and
/// what `zstd -19` does (every tenth file: it runs at a few MB/s), on both
/// cores.
fn zstd_ratios(files: &[PathBuf]) -> (f64, f64) {
    let ratio = |level: i32, step: usize| {
        let (raw, packed) = std::thread::scope(|scope| {
            let halves: Vec<_> = (0..2)
                .map(|half| {
                    scope.spawn(move || {
                        let (mut raw, mut packed) = (0u64, 0u64);
                        for file in files.iter().step_by(step).skip(half).step_by(2) {
                            let data = std::fs::read(file).unwrap();
                            raw += data.len() as u64;
                            packed += zstd::bulk::compress(&data, level).unwrap().len() as u64;
                        }
                        (raw, packed)
                    })
                })
                .collect();
            halves
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        packed as f64 / raw.max(1) as f64
    };
    (ratio(3, 1), ratio(19, 10))
}

fn chart(timeline: &[(f64, f64, f64)], path: &Path) {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 360)).into_drawing_area();
    let _ = root.fill(&WHITE);
    let max_x = timeline.last().map_or(1.0, |t| t.0);
    let max_y = timeline.iter().map(|t| t.1.max(t.2)).fold(10.0, f64::max) * 1.1;
    let Ok(mut chart) = ChartBuilder::on(&root)
        .caption(
            "busy node: monitoring-rs CPU (%) and RSS (MiB)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
    else {
        return;
    };
    let _ = chart.configure_mesh().x_desc("seconds").draw();
    let _ = chart
        .draw_series(LineSeries::new(timeline.iter().map(|t| (t.0, t.1)), &RED))
        .map(|s| {
            s.label("CPU %")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED))
        });
    let _ = chart
        .draw_series(LineSeries::new(timeline.iter().map(|t| (t.0, t.2)), &BLUE))
        .map(|s| {
            s.label("RSS MiB")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE))
        });
    let _ = chart.configure_series_labels().border_style(BLACK).draw();
    let _ = root.present();
}

fn main() {
    let out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench"));
    std::fs::create_dir_all(&out).unwrap();
    let mut report = BTreeMap::new();
    // `BENCH_ONLY=busy` (or quiet, forward, catch-up,
    // catch-up-without-metadata) runs one scenario, for profiling.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only == name;
    if run("quiet") {
        quiet(&mut report);
    }
    if run("busy") {
        busy(&mut report, &out);
    }
    if run("forward") {
        forward(&mut report);
    }
    if run("catch-up") {
        catch_up(&mut report, Metadata::Available);
    }
    // The same backlog while pod metadata cannot be had: the file is the
    // buffer, so memory stays as low.
    if run("catch-up-without-metadata") {
        catch_up(&mut report, Metadata::Unreachable);
        catch_up(&mut report, Metadata::Unknown);
    }
    report.insert("machine", machine());
    let text = serde_json::to_string_pretty(&report).unwrap();
    std::fs::write(out.join("report.json"), &text).unwrap();
    let none = Value::Null;
    let q = report.get("quiet").unwrap_or(&none);
    let b = report.get("busy").unwrap_or(&none);
    let l = report.get("query_under_load").unwrap_or(&none);
    let c = report.get("catch_up").unwrap_or(&none);
    let cu = report.get("catch_up_api_unreachable").unwrap_or(&none);
    let ck = report.get("catch_up_pods_unknown").unwrap_or(&none);
    let fw = report.get("forward").unwrap_or(&none);
    let m = report.get("machine").unwrap_or(&none);
    let mut table = std::io::stdout().lock();
    let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    let f3 = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.3}"));
    let _ = writeln!(
        table,
        "scenario               figure                              value          target"
    );
    let rows = [
        (
            "machine",
            "CPU charged per wake-up after 100 ms (us)",
            f(&m["cpu_us_per_idle_wakeup"]),
            "",
        ),
        (
            "quiet node",
            "CPU-seconds per minute",
            f(&q["cpu_seconds_per_minute"]),
            "<= 0.05",
        ),
        (
            "quiet node",
            "wake-ups per minute",
            f(&q["wakeups_per_minute"]),
            "",
        ),
        ("quiet node", "RSS (MiB)", f(&q["rss_mib"]), "<= 16"),
        (
            "busy node",
            "lines per second",
            f(&b["lines_per_second"]),
            "50000",
        ),
        (
            "busy node",
            "CPU-seconds per million lines",
            f(&b["cpu_seconds_per_million_lines"]),
            "<= 2",
        ),
        (
            "busy node",
            "peak / steady RSS (MiB)",
            format!("{} / {}", f(&b["peak_rss_mib"]), f(&b["steady_rss_mib"])),
            "<= 48",
        ),
        (
            "busy node",
            "lag p50 / p99 / max (s)",
            format!(
                "{} / {} / {}",
                f(&b["lag_seconds_p50"]),
                f(&b["lag_seconds_p99"]),
                f(&b["lag_seconds_max"])
            ),
            "max <= 1",
        ),
        (
            "busy node",
            "write to query p50 / p99 (ms)",
            format!(
                "{} / {}",
                f(&b["write_to_query_ms_p50"]),
                f(&b["write_to_query_ms_p99"])
            ),
            "p99 <= 100",
        ),
        (
            "busy node",
            "stored bytes per raw byte",
            f(&b["stored_per_raw_byte"]),
            "",
        ),
        (
            "busy node",
            "wake-ups per second",
            f(&b["wakeups_per_second"]),
            "",
        ),
        (
            "query under load",
            "p50 / p99 (ms)",
            format!("{} / {}", f(&l["p50_ms"]), f(&l["p99_ms"])),
            "p99 <= 20",
        ),
        (
            "query under load",
            "ingestion lag max (s)",
            f(&l["ingest_lag_seconds_max"]),
            "unaffected",
        ),
        (
            "forwarding",
            "CPU-s per M lines: 0 / 1 / 2 sinks",
            format!(
                "{} / {} / {}",
                f(&fw[0]["cpu_seconds_per_million_lines"]),
                f(&fw[1]["cpu_seconds_per_million_lines"]),
                f(&fw[2]["cpu_seconds_per_million_lines"])
            ),
            "",
        ),
        (
            "forwarding",
            "sink threads, cores at 50k lines/s: 1 / 2",
            format!(
                "{} / {}",
                f3(&fw[1]["sink_threads_cores_at_50k_lines_per_second"]),
                f3(&fw[2]["sink_threads_cores_at_50k_lines_per_second"])
            ),
            "<= 0.05",
        ),
        ("catch-up", "MB/s", f(&c["mb_per_second"]), ">= 400"),
        (
            "catch-up",
            "CPU-seconds per GB",
            f(&c["cpu_seconds_per_gb"]),
            "<= 3",
        ),
        ("catch-up", "peak RSS (MiB)", f(&c["peak_rss_mib"]), "<= 96"),
        (
            "catch-up",
            "disk per raw byte (zstd -3 / -19)",
            format!(
                "{} ({} / {})",
                f3(&c["disk"]["stored_per_raw_byte"]),
                f3(&c["disk"]["zstd_3"]),
                f3(&c["disk"]["zstd_19"])
            ),
            "<= 0.16",
        ),
        (
            "catch-up, API down",
            "MB/s / peak RSS (MiB)",
            format!("{} / {}", f(&cu["mb_per_second"]), f(&cu["peak_rss_mib"])),
            "within 10% / <= 96",
        ),
        (
            "catch-up, pods unknown",
            "MB/s / peak RSS (MiB)",
            format!("{} / {}", f(&ck["mb_per_second"]), f(&ck["peak_rss_mib"])),
            "within 10% / <= 96",
        ),
    ];
    for (scenario, figure, value, target) in rows {
        let _ = writeln!(table, "{scenario:<22} {figure:<35} {value:<14} {target}");
    }
    let _ = writeln!(
        table,
        "every scenario verified: the store holds exactly the lines written (count and checksum per stream)"
    );
    let _ = writeln!(
        table,
        "report: {}/report.json, chart: {}/busy.svg",
        out.display(),
        out.display()
    );
}
