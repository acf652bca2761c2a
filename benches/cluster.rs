//! What answering for the whole cluster costs: three real daemons on
//! 127.0.0.21, .22 and .23 (Kubernetes collector, stand-in nodes, one fake
//! API server publishing their EndpointSlice), the busy node's load split
//! over them, then 20 clients querying through node A — for the cluster,
//! and the same queries with `scope=node`, which is one node holding a
//! third of the data — one kind of query at a time. Log and metric queries, p50/p99 side by side. Every
//! node is checked to hold exactly the lines written to it, and the
//! cluster's counts to be their sum. Writes `target/bench/cluster.json`.
//!
//! `BENCH_SMOKE=1`: a few seconds at small scale, correctness only.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::api_server::FakeApiServer;
use testkit::daemon::{Daemon, DaemonCommand};
use testkit::kubelet::{Container, Node};
use testkit::messages::{Rng, message};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn smoke() -> bool {
    std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1")
}

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 21 + i as u8))
}

struct Slot {
    node: usize,
    container: Container,
    last_ts: i64,
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// Writes `rate` lines/s over `slots` for `seconds`; lines written per node.
fn drive(slots: &mut [Slot], rate: f64, seconds: f64, rng: &mut Rng, written: &mut [u64; 3]) {
    let start = Instant::now();
    let tick = Duration::from_millis(10);
    let (mut next, mut carry) = (Instant::now(), 0.0);
    let mut line = Vec::with_capacity(512);
    while start.elapsed().as_secs_f64() < seconds {
        carry += rate / 100.0;
        while carry >= 1.0 {
            carry -= 1.0;
            let slot = &mut slots[rng.below(slots.len() as u64) as usize];
            line.clear();
            message(rng, &mut line);
            let ts = testkit::now_ns().max(slot.last_ts + 1);
            slot.last_ts = ts;
            slot.container.write("stdout", ts, &line).unwrap();
            written[slot.node] += 1;
        }
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// The queries a user runs: one pod's lines, a filter over a namespace,
/// and two metric queries over every stream.
fn queries(pod: &str) -> Vec<(&'static str, String)> {
    vec![
        ("log: one pod", format!("{{pod_name=\"{pod}\"}}")),
        (
            "log: filter, all pods",
            r#"{namespace="bench"} |= "error""#.to_owned(),
        ),
        (
            "metric: sum by app",
            r#"sum by (app) (rate({namespace="bench"}[1m]))"#.to_owned(),
        ),
        (
            "metric: topk pods",
            r#"topk(5, sum by (pod_name) (count_over_time({namespace="bench"} |= "error" [1m])))"#
                .to_owned(),
        ),
    ]
}

/// 20 clients through `base` for `seconds`, all asking queries of `kind`:
/// latency per query kind (ms).
fn measure(
    base: &str,
    pods: &[String],
    kind: &'static str,
    scope: &'static str,
    seconds: f64,
) -> BTreeMap<&'static str, Vec<f64>> {
    let latencies: Arc<Mutex<BTreeMap<&'static str, Vec<f64>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..20)
        .map(|c| {
            let (base, latencies, stop, pod, kind) = (
                base.to_owned(),
                latencies.clone(),
                stop.clone(),
                pods[c * 7 % pods.len()].clone(),
                kind,
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let all: Vec<_> = queries(&pod)
                        .into_iter()
                        .filter(|(k, _)| *k == kind)
                        .collect();
                    let (kind, query) = &all[i % all.len()];
                    let metric = kind.starts_with("metric");
                    let t = Instant::now();
                    let response = client
                        .get(format!("{base}/loki/api/v1/query_range"))
                        .query(&[
                            ("query", query.as_str()),
                            ("since", if metric { "10m" } else { "5m" }),
                            ("limit", "100"),
                            ("step", "15s"),
                            ("scope", scope),
                        ])
                        .send();
                    let ok = response.is_ok_and(|r| {
                        r.status().is_success()
                            && !r.headers().contains_key("x-monitoring-missing-peers")
                    });
                    if ok {
                        latencies
                            .lock()
                            .unwrap()
                            .entry(kind)
                            .or_default()
                            .push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    Arc::try_unwrap(latencies)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_default()
}

fn entries(client: &reqwest::blocking::Client, address: SocketAddr, scope: &str) -> u64 {
    client
        .get(format!("http://{address}/loki/api/v1/index/stats"))
        .query(&[
            ("query", r#"{namespace="bench"}"#),
            ("start", "0"),
            ("scope", scope),
        ])
        .send()
        .and_then(|r| r.json::<Value>())
        .ok()
        .and_then(|v| v["entries"].as_u64())
        .unwrap_or(0)
}

fn main() {
    let (seconds, rate, pods_per_node) = if smoke() {
        (3.0, 3_000.0, 10)
    } else {
        (30.0, 50_000.0, 100)
    };
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApiServer::start();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let daemons_at: Vec<(IpAddr, &str)> = (0..3).map(|i| (ip(i), NODES[i])).collect();
    let port = api
        .slices()
        .daemon_set("monitoring-rs", "monitoring-rs", &daemons_at);
    let mut slots = Vec::new();
    let mut nodes = Vec::new();
    let mut pods = Vec::new();
    for (n, name) in NODES.iter().enumerate() {
        let node = Node::new(&dir.path().join(name)).unwrap();
        for p in 0..pods_per_node {
            let pod = format!("app-{n}-{p:03}");
            let uid = format!("uid-{n}-{p:03}");
            api.add_pod(
                "bench",
                &pod,
                &uid,
                name,
                &[("app", &format!("app-{}", p % 7))],
            );
            slots.push(Slot {
                node: n,
                container: node.start("bench", &pod, &uid, "c0").unwrap(),
                last_ts: 0,
            });
            pods.push(pod);
        }
        nodes.push(node);
    }
    let daemons: Vec<Daemon> = NODES
        .iter()
        .enumerate()
        .map(|(n, name)| {
            DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
                .kubernetes_as(
                    name,
                    &nodes[n],
                    &kubeconfig,
                    &dir.path().join(name).join("data"),
                )
                .args(["--auth", "none"])
                .args(["--peer-service", "monitoring-rs/monitoring-rs"])
                .on(ip(n))
                .port(port)
                .log("error")
                .quiet()
                .start()
        })
        .collect();
    let address = |n: usize| daemons[n].address();
    let client = reqwest::blocking::Client::new();
    // Every node knows its two peers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(0..3).all(|n| {
        client
            .get(format!("http://{}/status", address(n)))
            .send()
            .and_then(|r| r.json::<Value>())
            .is_ok_and(|s| s["peers"].as_array().is_some_and(|p| p.len() == 2))
    }) {
        assert!(
            Instant::now() < deadline,
            "the daemons never found each other"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rng = Rng(5);
    let mut written = [0u64; 3];
    // The busy node's load, split over three nodes, before any query.
    drive(&mut slots, rate, seconds, &mut rng, &mut written);
    // Then queries while the load goes on: the cluster, then one node.
    let base = format!("http://{}", address(0));
    let measured = Arc::new(Mutex::new(Vec::new()));
    let writer_stop = Arc::new(AtomicBool::new(false));
    // A follower on node-a of a pod on node-b: a line's way from the
    // file on one node to a client of another.
    let follow_latency: Arc<Mutex<Vec<f64>>> = Arc::default();
    let follower = {
        let url = format!(
            "{base}/logs/pod_name/{}?follow=true&format=ndjson&limit=0",
            pods[pods_per_node]
        );
        let (latencies, stop) = (follow_latency.clone(), writer_stop.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            let client = reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .unwrap();
            let Ok(response) = client.get(url).send() else {
                return;
            };
            for line in std::io::BufReader::new(response).lines() {
                let Ok(line) = line else { break };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(row) = serde_json::from_str::<Value>(&line)
                    && let Some(ts) = row["timestamp"]
                        .as_str()
                        .and_then(|t| t.parse::<i64>().ok())
                {
                    latencies
                        .lock()
                        .unwrap()
                        .push((testkit::now_ns() - ts) as f64 / 1e6);
                }
            }
        })
    };
    let writer = {
        let stop = writer_stop.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(9);
            while !stop.load(Ordering::Relaxed) {
                drive(&mut slots, rate, 1.0, &mut rng, &mut written);
            }
            written
        })
    };
    // One kind of query at a time, so a cheap query is not measured
    // waiting behind expensive ones; the cluster, then one node.
    let window = if smoke() { 1.5 } else { 10.0 };
    let mut cluster_latency: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut node_latency: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for (kind, _) in queries("") {
        cluster_latency.extend(measure(&base, &pods, kind, "cluster", window));
        node_latency.extend(measure(&base, &pods, kind, "node", window));
    }
    measured.lock().unwrap().push(("cluster", cluster_latency));
    measured.lock().unwrap().push(("node", node_latency));
    writer_stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    drop(follower);
    // Every node holds what was written to it; the cluster, the sum.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (n, lines) in written.iter().enumerate() {
        while entries(&client, address(n), "node") != *lines {
            assert!(
                Instant::now() < deadline,
                "{}: stored {} of {lines} lines",
                NODES[n],
                entries(&client, address(n), "node")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let total: u64 = written.iter().sum();
    assert_eq!(
        entries(&client, address(1), "cluster"),
        total,
        "the cluster's count"
    );
    let mut report = BTreeMap::new();
    let mut table = std::io::stdout().lock();
    let _ = writeln!(
        table,
        "query (20 clients via node-a)   cluster p50 / p99 (ms)   one node p50 / p99 (ms)   queries cluster / node"
    );
    let measured = measured.lock().unwrap();
    let (cluster, node) = (&measured[0].1, &measured[1].1);
    for (kind, _) in queries("") {
        let mut c = cluster.get(kind).cloned().unwrap_or_default();
        let mut o = node.get(kind).cloned().unwrap_or_default();
        assert!(!c.is_empty() && !o.is_empty(), "{kind}: no query answered");
        let row = json!({
            "cluster_p50_ms": percentile(&mut c, 0.5), "cluster_p99_ms": percentile(&mut c, 0.99),
            "node_p50_ms": percentile(&mut o, 0.5), "node_p99_ms": percentile(&mut o, 0.99),
            "cluster_queries": c.len(), "node_queries": o.len(),
        });
        let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
        let _ = writeln!(
            table,
            "{kind:<31} {:<24} {:<25} {} / {}",
            format!(
                "{} / {}",
                f(&row["cluster_p50_ms"]),
                f(&row["cluster_p99_ms"])
            ),
            format!("{} / {}", f(&row["node_p50_ms"]), f(&row["node_p99_ms"])),
            c.len(),
            o.len()
        );
        report.insert(kind, row);
    }
    let mut follow = follow_latency.lock().unwrap().clone();
    assert!(
        !follow.is_empty(),
        "the follower on node-a saw no line of node-b"
    );
    let follow_row = json!({
        "p50_ms": percentile(&mut follow, 0.5), "p99_ms": percentile(&mut follow, 0.99),
        "lines": follow.len(), "target_p99_ms": 100,
    });
    let _ = writeln!(
        table,
        "follow across nodes (file on node-b -> client of node-a): p50 / p99 {:.1} / {:.1} ms over {} lines",
        follow_row["p50_ms"].as_f64().unwrap_or(f64::NAN),
        follow_row["p99_ms"].as_f64().unwrap_or(f64::NAN),
        follow.len()
    );
    report.insert("follow across nodes", follow_row);
    let _ = writeln!(
        table,
        "lines: {total} over 3 nodes at {rate} lines/s; every node verified to hold exactly its lines"
    );
    let out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("cluster.json"),
        serde_json::to_string_pretty(&json!({"lines": total, "rate": rate, "queries": report}))
            .unwrap(),
    )
    .unwrap();
    for daemon in daemons {
        daemon.terminate();
    }
}
