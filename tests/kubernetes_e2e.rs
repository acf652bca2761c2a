//! End to end on a stand-in cluster: the fake API server, a kubelet-like
//! writer and the real binary. Pods start, log (with split lines on stdout
//! and stderr), rotate, get relabelled and deleted while the API server cuts
//! watches, forgets history (410 Gone) and restarts. Queries by namespace,
//! pod and pod label return exactly the lines written, labelled, in order.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::api_server::FakeApiServer;
use testkit::daemon::{Daemon, DaemonCommand};
use testkit::kubelet::{Container, Node};

/// The first entry's time: relative to the present, so always inside retention.
static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(testkit::a_day_ago_on_the_hour);

fn start(node: &Node, kubeconfig: &std::path::Path, data: &std::path::Path) -> Daemon {
    DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .kubernetes(node, kubeconfig, data)
        // Collection is under test here; access control has its own test.
        .args(["--auth", "none"])
        .args(["--flush-interval", "100ms", "--pod-wait", "3s"])
        .args(["--rotate-wait", "500ms"])
        .start()
}

fn query(base: &str, logql: &str) -> Vec<(Value, String)> {
    let client = reqwest::blocking_client();
    let url = format!("{base}/loki/api/v1/query_range");
    let body: Value = client
        .get(url)
        .query(&[
            ("query", logql),
            ("start", &(*T0 / 1_000_000_000).to_string()),
            ("end", &(*T0 / 1_000_000_000 + 3600).to_string()),
            ("limit", "5000"),
            ("direction", "forward"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut rows: Vec<(i64, Value, String)> = Vec::new();
    for stream in body["data"]["result"].as_array().unwrap_or(&Vec::new()) {
        for v in stream["values"].as_array().unwrap() {
            rows.push((
                v[0].as_str().unwrap().parse().unwrap(),
                stream["stream"].clone(),
                v[1].as_str().unwrap().to_owned(),
            ));
        }
    }
    rows.sort_by_key(|r| r.0);
    rows.into_iter().map(|(_, l, m)| (l, m)).collect()
}

/// reqwest's blocking client is not built here; a tiny wrapper over the
/// async one on a private runtime keeps the test synchronous.
mod reqwest {
    pub fn blocking_client() -> Client {
        Client(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        )
    }
    pub struct Client(tokio::runtime::Runtime);
    pub struct Request<'a>(&'a Client, ::reqwest::RequestBuilder);
    pub struct Response<'a>(&'a Client, ::reqwest::Response);
    impl Client {
        pub fn get(&self, url: String) -> Request<'_> {
            Request(self, ::reqwest::Client::new().get(url))
        }
    }
    impl<'a> Request<'a> {
        pub fn query(self, q: &[(&str, &str)]) -> Self {
            Request(self.0, self.1.query(q))
        }
        pub fn send(self) -> Result<Response<'a>, ::reqwest::Error> {
            let r = self.0.0.block_on(self.1.send())?;
            Ok(Response(self.0, r))
        }
    }
    impl Response<'_> {
        pub fn json(self) -> Result<serde_json::Value, ::reqwest::Error> {
            self.0.0.block_on(self.1.json())
        }
    }
}

fn wait_for(base: &str, logql: &str, count: usize) -> Vec<(Value, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = query(base, logql);
        if rows.len() >= count || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Writer {
    ts: i64,
}

impl Writer {
    fn line(&mut self, c: &mut Container, stream: &str, text: &str) -> String {
        self.ts += 1_000_000;
        c.write(stream, self.ts, text.as_bytes()).unwrap();
        text.to_owned()
    }
}

#[test]
fn pods_log_rotate_relabel_and_go_away_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&dir.path().join("node")).unwrap();
    let mut api = FakeApiServer::start();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    api.add_pod(
        "default",
        "web-1",
        "uid-web",
        "node-1",
        &[
            ("app.kubernetes.io/name", "web"),
            ("pod-template-hash", "abc"),
        ],
    );
    api.add_pod("default", "db-0", "uid-db", "node-1", &[("app", "db")]);
    api.annotate(
        "default",
        "web-1",
        &[("team.example.com/owner", "shop"), ("noise", "x")],
    );
    api.add_pod("other", "far", "uid-far", "node-2", &[("app", "far")]);

    let mut w = Writer { ts: *T0 };
    let mut web = node.start("default", "web-1", "uid-web", "nginx").unwrap();
    web.split_at = 50;
    let mut db = node.start("default", "db-0", "uid-db", "postgres").unwrap();
    let mut web_out = Vec::new();
    let mut web_err = Vec::new();
    for i in 0..20 {
        web_out.push(w.line(&mut web, "stdout", &format!("GET /item/{i} 200")));
    }
    // A long line split into pieces, with stderr lines between its pieces.
    let long = format!("BEGIN {} END", "x".repeat(180));
    let time = w.ts + 1_000_000;
    w.ts = time;
    for (k, piece) in long.as_bytes().chunks(50).enumerate() {
        let last = (k + 1) * 50 >= long.len();
        let line = format!(
            "{} stdout {} {}\n",
            testkit::kubelet::rfc3339(time),
            if last { "F" } else { "P" },
            String::from_utf8_lossy(piece)
        );
        std::io::Write::write_all(
            &mut std::fs::OpenOptions::new()
                .append(true)
                .open(web.link())
                .unwrap(),
            line.as_bytes(),
        )
        .unwrap();
        if !last {
            web_err.push(w.line(&mut web, "stderr", &format!("warning {k}")));
        }
    }
    web_out.push(long.clone());
    let mut db_lines = vec![w.line(&mut db, "stdout", "checkpoint starting")];

    let data = dir.path().join("data");
    let daemon = start(&node, &kubeconfig, &data);
    let got = wait_for(
        &daemon.base(),
        r#"{pod_name="web-1", stream="stdout"}"#,
        web_out.len(),
    );
    assert_eq!(
        got.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
        web_out,
        "stdout, with the split line joined"
    );
    let labels = &got[0].0;
    for (k, v) in [
        ("namespace", "default"),
        ("pod_name", "web-1"),
        ("container_name", "nginx"),
        ("node_name", "node-1"),
        ("stream", "stdout"),
        ("app_kubernetes_io_name", "web"),
    ] {
        assert_eq!(labels[k], v, "label {k} in {labels}");
    }
    assert!(labels["container_id"].as_str().unwrap().len() == 64);
    assert!(
        labels.get("pod_template_hash").is_none(),
        "excluded by default"
    );
    assert_eq!(
        wait_for(
            &daemon.base(),
            r#"{pod_name="web-1", stream="stderr"}"#,
            web_err.len()
        )
        .len(),
        web_err.len()
    );

    // Rotation: the kubelet renames 0.log and the runtime reopens it.
    for i in 20..30 {
        web_out.push(w.line(&mut web, "stdout", &format!("GET /item/{i} 200")));
    }
    web.rotate().unwrap();
    for i in 30..40 {
        web_out.push(w.line(&mut web, "stdout", &format!("GET /item/{i} 200")));
    }
    // The API server misbehaves meanwhile: cut watches, 410, a restart.
    api.cut_watches();
    api.expire_history();
    api.restart(Duration::from_millis(300));
    api.relabel("default", "db-0", &[("app", "db-v2")]);
    std::thread::sleep(Duration::from_secs(1));
    db_lines.push(w.line(&mut db, "stdout", "checkpoint complete"));

    // A restart of monitoring-rs itself loses and repeats nothing.
    drop(daemon);
    for i in 40..45 {
        web_out.push(w.line(&mut web, "stdout", &format!("GET /item/{i} 200")));
    }
    let daemon = start(&node, &kubeconfig, &data);
    let got = wait_for(
        &daemon.base(),
        r#"{pod_name="web-1", stream="stdout"}"#,
        web_out.len(),
    );
    assert_eq!(
        got.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
        web_out,
        "every line once, in order, across rotation and restart"
    );

    // By label: the relabelled pod's new lines carry the new label.
    let by_label = wait_for(&daemon.base(), r#"{app="db-v2"}"#, 1);
    assert_eq!(
        by_label.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>(),
        ["checkpoint complete"]
    );
    let ns = wait_for(
        &daemon.base(),
        r#"{namespace="default", container_name="postgres"}"#,
        db_lines.len(),
    );
    assert_eq!(
        ns.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
        db_lines
    );

    // The pod goes away: its last lines are still labelled.
    web_out.push(w.line(&mut web, "stdout", "shutting down"));
    api.delete_pod("default", "web-1");
    std::thread::sleep(Duration::from_millis(300));
    node.remove_pod("default", "web-1", "uid-web").unwrap();
    let got = wait_for(
        &daemon.base(),
        r#"{app_kubernetes_io_name="web", stream="stdout"}"#,
        web_out.len(),
    );
    assert_eq!(got.last().map(|(_, m)| m.as_str()), Some("shutting down"));
    assert_eq!(got.len(), web_out.len());
    assert!(
        query(&daemon.base(), r#"{namespace="other"}"#).is_empty(),
        "another node's pod"
    );
}
