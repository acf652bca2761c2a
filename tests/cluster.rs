//! One answer for the whole cluster: three daemons on 127.0.0.2, .3 and
//! .4 (the follow test: .13 to .15), each with its own folder and store, finding each other from the
//! EndpointSlices the fake API server publishes. Every route asked of one
//! node must answer what one store holding all three nodes' lines answers;
//! the reference store is built here from the very lines (labels and
//! times) each node holds. Then a node dies (warnings; partial=false is a
//! 503) and comes back (complete again).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monitoring_rs::api::{self, AppState};
use monitoring_rs::log_database::labels::Labels;
use monitoring_rs::log_database::{Config, Database, StreamEntries, WriteBatch};
use monitoring_rs::shutdown::Shutdown;
use serde_json::Value;
use testkit::api_server::FakeApiServer;
use testkit::daemon::{Daemon, DaemonCommand};

/// The nodes' names.
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Node `i`'s address: 127.0.0.`first + i`.
fn ip(first: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, first + i as u8))
}

/// The lines of one service on one node: logfmt with levels, statuses and
/// latencies, as a web service writes them.
fn lines(node: usize, service: usize, count: usize) -> String {
    let mut out = String::new();
    for i in 0..count {
        let n = i * 7 + node * 13 + service * 29;
        let (level, status) = match n % 10 {
            0 => ("error", 503),
            1 | 2 => ("warn", 404),
            _ => ("info", 200),
        };
        let latency = (n * 37 % 900) as f64 / 1000.0 + 0.001;
        out.push_str(&format!(
            "level={level} status={status} latency={latency} method=GET path=/api/v{service}/items/{i} node={}\n",
            NODES[node]
        ));
    }
    out
}

struct Node {
    daemon: Option<Daemon>,
    logs: PathBuf,
    data: PathBuf,
}

struct Cluster {
    _dir: tempfile::TempDir,
    _api: FakeApiServer,
    kubeconfig: PathBuf,
    first: u8,
    port: u16,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Three daemons on 127.0.0.`first`, `first + 1` and `first + 2`.
    fn start(first: u8) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let api = FakeApiServer::start();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let daemons: Vec<(IpAddr, &str)> = (0..3).map(|i| (ip(first, i), NODES[i])).collect();
        let port = api
            .slices()
            .daemon_set("monitoring-rs", "monitoring-rs", &daemons);
        let mut cluster = Self {
            _dir: dir,
            _api: api,
            kubeconfig,
            first,
            port,
            nodes: Vec::new(),
        };
        for (i, name) in NODES.iter().enumerate() {
            let root = cluster._dir.path().join(name);
            let logs = root.join("logs");
            std::fs::create_dir_all(&logs).unwrap();
            for service in 0..3 {
                std::fs::write(
                    logs.join(format!("svc-{service}.log")),
                    lines(i, service, 120 + 40 * service),
                )
                .unwrap();
            }
            cluster.nodes.push(Node {
                daemon: None,
                logs,
                data: root.join("data"),
            });
            cluster.up(i);
        }
        cluster
    }

    fn up(&mut self, i: usize) {
        let node = &self.nodes[i];
        let daemon = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
            .args(["--log-collector", "directory", "--node-name", NODES[i]])
            .args(["--peer-service", "monitoring-rs/monitoring-rs"])
            .args(["--peer-timeout", "3s", "--flush-interval", "200ms"])
            .flag("--kubeconfig", &self.kubeconfig)
            .flag("--root-path", &node.logs)
            .flag("--data-directory", &node.data)
            .on(ip(self.first, i))
            .port(self.port)
            .quiet()
            .start();
        self.nodes[i].daemon = Some(daemon);
    }

    fn address(&self, i: usize) -> SocketAddr {
        SocketAddr::new(ip(self.first, i), self.port)
    }

    /// Waits until node `i` knows its two peers.
    fn wait_for_peers(&self, i: usize) {
        wait("the peers", || {
            let (_, body) = testkit::daemon::get(self.address(i), "/status")?;
            let status: Value = serde_json::from_str(&body).ok()?;
            (status["peers"].as_array()?.len() == 2).then_some(())
        });
    }
}

fn wait<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A blocking HTTP client, as curl or Grafana would ask.
fn ask(
    address: SocketAddr,
    path: &str,
    params: &[(&str, String)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let response = reqwest::blocking::Client::new()
        .get(format!("http://{address}{path}"))
        .query(params)
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().unwrap())
}

fn json(address: SocketAddr, path: &str, params: &[(&str, String)]) -> Value {
    let (status, _, body) = ask(address, path, params);
    assert_eq!(status, 200, "{path} {params:?}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Every entry node `i` holds, with its stream labels and time.
fn entries_of(cluster: &Cluster, i: usize) -> Vec<(Labels, i64, String)> {
    let response = reqwest::blocking::Client::new()
        .get(format!(
            "http://{}/loki/api/v1/query_range",
            cluster.address(i)
        ))
        .header("X-Loki-Response-Encoding-Flags", "categorize-labels")
        .query(&[
            ("query", r#"{path=~".+"}"#),
            ("direction", "forward"),
            ("limit", "5000"),
            ("start", "0"),
            ("scope", "node"),
        ])
        .send()
        .unwrap();
    let body: Value = response.json().unwrap();
    let mut out = Vec::new();
    for stream in body["data"]["result"].as_array().unwrap() {
        let labels = Labels::new(
            stream["stream"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())),
        );
        for value in stream["values"].as_array().unwrap() {
            out.push((
                labels.clone(),
                value[0].as_str().unwrap().parse().unwrap(),
                value[1].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// The reference: one store holding what the three nodes hold, served by
/// the same API on 127.0.0.5.
struct Reference {
    address: SocketAddr,
    stop: Shutdown,
    _dir: tempfile::TempDir,
    _thread: std::thread::JoinHandle<()>,
}

impl Reference {
    fn new(entries: Vec<(Labels, i64, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), Config::default()).unwrap().0);
        let mut by_stream: std::collections::BTreeMap<Labels, Vec<(i64, Vec<u8>)>> =
            Default::default();
        for (labels, ts, line) in entries {
            by_stream
                .entry(labels)
                .or_default()
                .push((ts, line.into_bytes()));
        }
        db.write(&WriteBatch {
            streams: by_stream
                .into_iter()
                .map(|(labels, entries)| StreamEntries::with(labels, entries))
                .collect(),
            checkpoints: vec![],
        })
        .unwrap();
        db.flush().unwrap();
        let listener = TcpListener::bind((IpAddr::from([127, 0, 0, 5]), 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Shutdown::new();
        let state = AppState::new(db);
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                api::serve(listener, state, async move { stopped.wait().await })
                    .await
                    .unwrap();
            });
        });
        Self {
            address,
            stop,
            _dir: dir,
            _thread: thread,
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

/// Equal JSON, numbers in sample values equal to 1e-9 relative (the
/// nodes add the same numbers in another order).
fn same(what: &str, cluster: &Value, reference: &Value) {
    fn walk(path: &str, a: &Value, b: &Value) -> Result<(), String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys =
                    |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
                if keys(x) != keys(y) {
                    return Err(format!("{path}: keys {:?} vs {:?}", keys(x), keys(y)));
                }
                for (k, v) in x {
                    walk(&format!("{path}.{k}"), v, &y[k])?;
                }
                Ok(())
            }
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    return Err(format!("{path}: {} items vs {}", x.len(), y.len()));
                }
                for (i, (v, w)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), v, w)?;
                }
                Ok(())
            }
            (Value::String(x), Value::String(y)) if x != y => {
                match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(v), Ok(w)) if (v - w).abs() <= 1e-9 * v.abs().max(1.0) => Ok(()),
                    _ => Err(format!("{path}: {x:?} vs {y:?}")),
                }
            }
            _ if a == b => Ok(()),
            _ => Err(format!("{path}: {a} vs {b}")),
        }
    }
    if let Err(e) = walk("", cluster, reference) {
        panic!("{what}: the cluster's answer differs from one store's at {e}");
    }
}

#[test]
fn any_node_answers_for_the_whole_cluster_as_one_store_would() {
    let mut cluster = Cluster::start(2);
    // Every node has read its files.
    let expected: Vec<usize> = (0..3).map(|_| 120 + 160 + 200).collect();
    for (i, count) in expected.iter().enumerate() {
        wait("every line stored", || {
            (entries_of(&cluster, i).len() == *count).then_some(())
        });
        cluster.wait_for_peers(i);
    }
    let all: Vec<(Labels, i64, String)> = (0..3).flat_map(|i| entries_of(&cluster, i)).collect();
    let first = all.iter().map(|e| e.1).min().unwrap();
    let last = all.iter().map(|e| e.1).max().unwrap();
    let reference = Reference::new(all);
    let start = (first - 60_000_000_000).to_string();
    let end = (last + 60_000_000_000).to_string();
    let at = (last + 1_000_000_000).to_string();
    let range = |query: &str, extra: &[(&'static str, &str)]| {
        let mut p = vec![
            ("query", query.to_owned()),
            ("start", start.clone()),
            ("end", end.clone()),
        ];
        p.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        p
    };
    let instant = |query: &str| vec![("query", query.to_owned()), ("time", at.clone())];
    let mut checks: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
    for (query, extra) in [
        (r#"{path=~".+"}"#, vec![("limit", "100")]),
        (
            r#"{path=~".+"} |= "error""#,
            vec![("limit", "45"), ("direction", "forward")],
        ),
        (
            r#"{path=~".+/svc-1.log"} | logfmt | latency > 500ms"#,
            vec![("limit", "30")],
        ),
        (
            r#"topk(3, sum by (path) (count_over_time({path=~".+"}[1m])))"#,
            vec![("step", "10s")],
        ),
        (
            r#"sum by (level) (rate({path=~".+"} | logfmt [30s]))"#,
            vec![("step", "5s")],
        ),
        (
            r#"avg(count_over_time({path=~".+"}[1m]))"#,
            vec![("step", "10s")],
        ),
        (
            r#"count(count_over_time({path=~".+"} |= "error" [1m]))"#,
            vec![("step", "10s")],
        ),
        (
            r#"quantile_over_time(0.9, {path=~".+"} | logfmt | unwrap latency [1m]) by (level)"#,
            vec![("step", "10s")],
        ),
        (
            r#"max_over_time({path=~".+"} | logfmt | unwrap latency [1m]) by (status)"#,
            vec![("step", "10s")],
        ),
        (
            r#"avg_over_time({path=~".+"} | logfmt latency | unwrap latency [1m])"#,
            vec![("step", "15s")],
        ),
        (
            r#"sum(rate({path=~".+"} |= "level=error" [1m])) / sum(rate({path=~".+"}[1m]))"#,
            vec![("step", "10s")],
        ),
        (
            r#"sum by (node) (count_over_time({path=~".+"} | logfmt [1m])) > bool 50"#,
            vec![("step", "10s")],
        ),
    ] {
        checks.push(("/loki/api/v1/query_range", range(query, &extra)));
    }
    for query in [
        r#"sum by (level) (count_over_time({path=~".+"} | logfmt [10m]))"#,
        r#"topk(2, count_over_time({path=~".+"}[10m]))"#,
        r#"sort_desc(avg by (node) (avg_over_time({path=~".+"} | logfmt latency, node | unwrap latency [10m]) by (node)))"#,
        r#"{path=~".+"} | logfmt | level="warn""#,
    ] {
        checks.push(("/loki/api/v1/query", instant(query)));
    }
    checks.push(("/loki/api/v1/labels", range("", &[])[1..].to_vec()));
    checks.push((
        "/loki/api/v1/label/path/values",
        range("", &[])[1..].to_vec(),
    ));
    checks.push((
        "/loki/api/v1/series",
        vec![
            ("match[]", r#"{path=~".+svc-[02].log"}"#.into()),
            ("start", start.clone()),
            ("end", end.clone()),
        ],
    ));
    checks.push(("/loki/api/v1/index/stats", range(r#"{path=~".+"}"#, &[])));
    checks.push((
        "/loki/api/v1/index/volume",
        range(r#"{path=~".+"}"#, &[("targetLabels", "path")]),
    ));
    checks.push((
        "/loki/api/v1/index/volume_range",
        range(
            r#"{service_name=~".+"}"#,
            &[("step", "30s"), ("aggregateBy", "labels")],
        ),
    ));
    // What Logs Drilldown asks.
    checks.push((
        "/loki/api/v1/detected_labels",
        range(r#"{path=~".+"}"#, &[]),
    ));
    checks.push((
        "/loki/api/v1/detected_fields",
        range(r#"{path=~".+"}"#, &[("line_limit", "300")]),
    ));
    checks.push((
        "/loki/api/v1/detected_field/status/values",
        range(r#"{path=~".+"} |= "GET""#, &[("line_limit", "300")]),
    ));
    checks.push((
        "/loki/api/v1/patterns",
        range(r#"{path=~".+"}"#, &[("step", "30s")]),
    ));
    for asked in 0..3 {
        for (path, params) in &checks {
            let mut mine = json(cluster.address(asked), path, params);
            let mut one = json(reference.address, path, params);
            if path.ends_with("stats") {
                // Blocks depend on when each store flushed, not on the data.
                mine["chunks"].take();
                one["chunks"].take();
            }
            if path.ends_with("query_range") || path.ends_with("query") {
                assert!(
                    !one["data"]["result"].as_array().unwrap().is_empty(),
                    "{path} {params:?} is empty"
                );
            }
            same(&format!("node {asked}: {path} {params:?}"), &mine, &one);
        }
    }
    // `/logs` and the native alias, with their own shapes.
    let logs = [("limit", "40".to_owned()), ("format", "ndjson".to_owned())];
    let (_, _, clustered) = ask(
        cluster.address(1),
        "/logs/service_name/unknown_service",
        &logs,
    );
    let (_, _, one) = ask(
        reference.address,
        "/logs/service_name/unknown_service",
        &logs,
    );
    assert_eq!(clustered, one);
    assert_eq!(clustered.lines().count(), 40);
    // scope=node: this node's lines alone.
    let local = json(
        cluster.address(0),
        "/loki/api/v1/index/stats",
        &range(r#"{path=~".+"}"#, &[("scope", "node")]),
    );
    assert_eq!(local["entries"], 480);

    // A node dies: the others answer, and say who is missing.
    cluster.nodes[2].daemon.take().unwrap().kill();
    let volume = range(r#"{path=~".+"}"#, &[("targetLabels", "path")]);
    let (status, headers, body) = ask(cluster.address(0), "/loki/api/v1/index/volume", &volume);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let warnings = answer["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].as_str().unwrap().contains("node-c"),
        "{warnings:?}"
    );
    assert_eq!(answer["data"]["result"].as_array().unwrap().len(), 6);
    assert_eq!(
        headers["x-monitoring-missing-peers"],
        cluster.address(2).to_string().as_str()
    );
    let mut strict = volume.clone();
    strict.push(("partial", "false".into()));
    let (status, _, body) = ask(cluster.address(0), "/loki/api/v1/index/volume", &strict);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("node-c"), "{body}");
    // /metrics counts the peers' answers by outcome.
    let (_, _, metrics) = ask(cluster.address(0), "/metrics", &[]);
    let unreachable = format!(
        "monitoring_rs_peer_requests_total{{peer=\"{}\",outcome=\"unreachable\"}}",
        cluster.address(2)
    );
    assert!(metrics.contains(&unreachable), "{metrics}");
    assert!(metrics.contains("monitoring_rs_peer_request_duration_seconds_bucket"));
    // Logs too: the header says what the lines lack.
    let (status, headers, _) = ask(
        cluster.address(1),
        "/logs/service_name/unknown_service",
        &logs,
    );
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-monitoring-missing-peers"));

    // It comes back: complete again.
    cluster.up(2);
    for (path, params) in &checks[..6] {
        let mine = wait("the node back", || {
            let (status, headers, body) = ask(cluster.address(0), path, params);
            (status == 200 && !headers.contains_key("x-monitoring-missing-peers"))
                .then(|| serde_json::from_str::<Value>(&body).unwrap())
        });
        same(
            &format!("after the restart: {path}"),
            &mine,
            &json(reference.address, path, params),
        );
    }
    for node in &mut cluster.nodes {
        assert!(node.daemon.take().unwrap().terminate().success());
    }
}

/// A line written on any node reaches a follower connected to another:
/// both the `follow=true` stream and Loki's tail websocket, their
/// backfill the cluster's newest lines.
#[test]
fn a_line_on_any_node_reaches_followers_on_the_others() {
    let mut cluster = Cluster::start(13);
    for i in 0..3 {
        wait("every line stored", || {
            (entries_of(&cluster, i).len() == 480).then_some(())
        });
        cluster.wait_for_peers(i);
    }
    let newest: Vec<String> = {
        let mut all: Vec<(Labels, i64, String)> =
            (0..3).flat_map(|i| entries_of(&cluster, i)).collect();
        all.sort_by_key(|e| e.1);
        all[all.len() - 5..].iter().map(|e| e.2.clone()).collect()
    };
    // follow=true on node-a.
    let follow = reqwest::blocking::Client::new()
        .get(format!(
            "http://{}/logs/service_name/unknown_service",
            cluster.address(0)
        ))
        .query(&[("follow", "true"), ("format", "text"), ("limit", "5")])
        .send()
        .unwrap();
    assert_eq!(follow.status(), 200);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(follow).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let backfill: Vec<String> = (0..5)
        .map(|_| lines_rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(
        backfill, newest,
        "the backfill is the cluster's newest lines, oldest first"
    );
    // The websocket tail on node-b.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!(
        "ws://{}/loki/api/v1/tail?query={}&limit=5",
        cluster.address(1),
        "%7Bpath%3D~%22.%2B%22%7D"
    );
    let mut socket = runtime.block_on(async {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        socket
    });
    let frame_lines = |frame: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(frame).unwrap();
        let mut lines: Vec<(String, String)> = v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["values"].as_array().unwrap().clone())
            .map(|e| {
                (
                    e[0].as_str().unwrap().to_owned(),
                    e[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        lines.sort();
        lines.into_iter().map(|(_, l)| l).collect()
    };
    let next_text = |socket: &mut tokio_tungstenite::WebSocketStream<_>| -> String {
        use futures_util::StreamExt;
        runtime.block_on(async {
            loop {
                let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                    .await
                    .expect("a tail frame in time")
                    .unwrap()
                    .unwrap();
                if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                    return text.to_string();
                }
            }
        })
    };
    assert_eq!(frame_lines(&next_text(&mut socket)), newest);
    // Lines written on node-c and node-b reach both followers.
    for (node, text) in [
        (2, "level=error msg=\"written on c\""),
        (1, "level=info msg=\"written on b\""),
    ] {
        testkit::append(
            &cluster.nodes[node].logs.join("svc-0.log"),
            &format!("{text}\n"),
        );
        let got = lines_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, text);
        assert_eq!(frame_lines(&next_text(&mut socket)), vec![text.to_owned()]);
    }
    // node-c restarts: both followers are fed by it again once it is back.
    cluster.nodes[2].daemon.take().unwrap().kill();
    cluster.up(2);
    cluster.wait_for_peers(2);
    std::thread::sleep(Duration::from_secs(3));
    let text = "level=warn msg=\"written on c after its restart\"";
    testkit::append(
        &cluster.nodes[2].logs.join("svc-1.log"),
        &format!("{text}\n"),
    );
    assert_eq!(
        lines_rx.recv_timeout(Duration::from_secs(15)).unwrap(),
        text
    );
    assert_eq!(frame_lines(&next_text(&mut socket)), vec![text.to_owned()]);
}

/// A daemon given its own address among its peers (the same `--peers`
/// list everywhere, or its address under another name) answers once,
/// without a warning: it tells its own questions apart.
#[test]
fn a_daemon_among_its_own_peers_answers_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path(), Config::default()).unwrap().0);
    let now = monitoring_rs::log_database::now_ns();
    db.write(&WriteBatch {
        streams: vec![StreamEntries::with(
            Labels::new([("app", "web")]),
            (0..5).map(|i| (now - 1_000_000_000 + i, format!("line {i}").into_bytes())),
        )],
        checkpoints: vec![],
    })
    .unwrap();
    let listener = TcpListener::bind((IpAddr::from([127, 0, 0, 19]), 0)).unwrap();
    let address = listener.local_addr().unwrap();
    let state = AppState {
        peers: monitoring_rs::cluster::Peers::fixed(&[address]),
        ..AppState::new(db)
    };
    let stop = Shutdown::new();
    let stopped = stop.clone();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            api::serve(listener, state, async move { stopped.wait().await })
                .await
                .unwrap();
        });
    });
    let (status, headers, body) = ask(
        address,
        "/loki/api/v1/query_range",
        &[("query", r#"{app="web"}"#.into())],
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        !headers.contains_key("x-monitoring-missing-peers"),
        "{body}"
    );
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(answer.get("warnings").is_none(), "{body}");
    assert_eq!(
        answer["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    stop.trigger();
    server.join().unwrap();
}
