//! Pod metadata that is late or never comes: with the API server
//! unreachable, or answering without the node's pods, or going away during
//! a busy run, every line is stored exactly once, labelled from its file
//! name meanwhile, with pod labels again once metadata is back; `/status`
//! says how many lines went out without it and why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use monitoring_rs::log_database::query::{Matcher, Query};
use monitoring_rs::log_database::{Config, Database};
use serde_json::Value;
use testkit::api_server::FakeApiServer;
use testkit::daemon::{Daemon, DaemonCommand};
use testkit::kubelet::{Container, Node};

fn start(node: &Node, kubeconfig: &std::path::Path, data: &std::path::Path) -> Daemon {
    DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .kubernetes(node, kubeconfig, data)
        // These exercise collection; access control has its own test.
        .args(["--auth", "none"])
        .args(["--flush-interval", "100ms", "--pod-wait", "2s"])
        .start()
}

fn write(c: &mut Container, prefix: &str, from: usize, to: usize) {
    for i in from..to {
        let text = format!("{prefix} {i:05}");
        c.write("stdout", testkit::now_ns(), text.as_bytes())
            .unwrap();
    }
}

/// Every stored line of `pod`, with the value of label `app` it carries.
fn stored(data: &std::path::Path, pod: &str) -> Vec<(String, Option<String>)> {
    let (db, _) = Database::open(data, Config::default()).unwrap();
    db.query(Query::new(vec![Matcher::equal("pod_name", pod)]))
        .unwrap()
        .map(|e| {
            (
                String::from_utf8(e.line).unwrap(),
                e.labels.get("app").map(str::to_owned),
            )
        })
        .collect()
}

fn status(daemon: &Daemon) -> Value {
    let (_, body) = daemon.get("/status").unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn wait_for_lines(daemon: &Daemon, lines: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(daemon);
        if s["collector"]["lines_total"].as_u64() >= Some(lines) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The API server is down, or up without the pods: every line is stored,
/// labelled from its file name, and counted by reason.
#[test]
fn without_metadata_every_line_is_stored_from_the_file_name() {
    for reachable in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(&dir.path().join("node")).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let api = FakeApiServer::start();
        api.write_kubeconfig(&kubeconfig).unwrap();
        let api = reachable.then_some(api); // dropped: nothing answers
        let data = dir.path().join("data");
        let mut pods: Vec<Container> = (0..4)
            .map(|p| {
                node.start("default", &format!("gone-{p}"), &format!("uid-{p}"), "app")
                    .unwrap()
            })
            .collect();
        for c in &mut pods {
            write(c, "backlog", 0, 2_000);
        }
        let started = Instant::now();
        let daemon = start(&node, &kubeconfig, &data);
        let s = wait_for_lines(&daemon, 8_000);
        let took = started.elapsed();
        let k = &s["collector"]["kubernetes"]["lines_without_pod_metadata"];
        let (reason, other) = if reachable {
            ("pod_unknown", "api_unavailable")
        } else {
            ("api_unavailable", "pod_unknown")
        };
        assert_eq!(k[reason], 8_000, "{reachable}: {s}");
        assert_eq!(k[other], 0, "{reachable}: {s}");
        // Nothing waited out the pod wait: there was nothing to wait for.
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(daemon.terminate().success());
        for p in 0..4 {
            let lines = stored(&data, &format!("gone-{p}"));
            let want: Vec<String> = (0..2_000).map(|i| format!("backlog {i:05}")).collect();
            assert_eq!(lines.iter().map(|l| l.0.clone()).collect::<Vec<_>>(), want);
        }
        drop(api);
    }
}

/// The API server goes away during a busy run and comes back: nothing is
/// lost, a pod started meanwhile is labelled from its file name until its
/// metadata arrives, and after that its lines carry its labels.
#[test]
fn the_api_server_going_away_and_back_loses_nothing_and_labels_return() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&dir.path().join("node")).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut api = FakeApiServer::start();
    api.write_kubeconfig(&kubeconfig).unwrap();
    api.add_pod("default", "web", "uid-web", "node-1", &[("app", "web")]);
    let data = dir.path().join("data");
    let mut web = node.start("default", "web", "uid-web", "nginx").unwrap();
    let daemon = start(&node, &kubeconfig, &data);
    write(&mut web, "before", 0, 500);
    wait_for_lines(&daemon, 500);
    // Down for 4 s: a new pod starts meanwhile (the API server learns of it
    // while down, as a restarted one would from etcd).
    api.add_pod("default", "late", "uid-late", "node-1", &[("app", "late")]);
    let down = std::thread::spawn(move || {
        api.restart(Duration::from_secs(4));
        api
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut late = node.start("default", "late", "uid-late", "worker").unwrap();
    for i in 0..10 {
        write(&mut web, "during", i * 100, (i + 1) * 100);
        write(&mut late, "during", i * 100, (i + 1) * 100);
        std::thread::sleep(Duration::from_millis(250));
    }
    let api = down.join().unwrap();
    // Back: the relist brings the late pod; its next lines carry its labels.
    // The watch reconnects with its back-off; write until a line with the
    // late pod's labels is stored, then once more: those must all carry them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = 0;
    loop {
        write(&mut late, "after", after, after + 50);
        after += 50;
        let s = wait_for_lines(&daemon, (500 + 2_000 + after) as u64);
        let labelled = daemon
            .get("/logs/app/late?limit=1")
            .is_some_and(|(status, body)| status == 200 && body.trim() != "[]");
        if labelled {
            break;
        }
        assert!(Instant::now() < deadline, "labels never came back: {s}");
        std::thread::sleep(Duration::from_millis(300));
    }
    write(&mut late, "after", after, after + 50);
    after += 50;
    wait_for_lines(&daemon, (500 + 2_000 + after) as u64);
    assert!(daemon.terminate().success());
    let web_lines = stored(&data, "web");
    assert_eq!(web_lines.len(), 1_500, "nothing lost or repeated");
    assert!(
        web_lines
            .iter()
            .all(|(_, app)| app.as_deref() == Some("web")),
        "web was known before the outage"
    );
    let late_lines = stored(&data, "late");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (line, _) in &late_lines {
        *counts.entry(line.clone()).or_default() += 1;
    }
    assert_eq!(late_lines.len(), 1_000 + after, "nothing lost");
    assert!(counts.values().all(|n| *n == 1), "nothing repeated");
    let last = late_lines.iter().rev().take(50).collect::<Vec<_>>();
    assert!(
        last.iter().all(|(_, app)| app.as_deref() == Some("late")),
        "labels restored: {last:?}"
    );
    drop(api);
}
