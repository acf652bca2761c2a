//! No start-up window: a first start on a kubelet layout, a rotation (rename,
//! or rename then gzip at the next rotation, as the kubelet does) in the
//! first seconds, and a SIGKILL before the first flush. After a restart the
//! store holds every line exactly once — the daemon made the start position
//! of every file it began reading durable before reading it.

use std::time::{Duration, Instant};

use monitoring_rs::log_database::query::{Matcher, Query};
use monitoring_rs::log_database::{Config, Database};
use testkit::api_server::FakeApiServer;
use testkit::daemon::{Daemon, DaemonCommand};
use testkit::kubelet::{Container, Node};

/// Starts the daemon and waits for its API: by then it has found the
/// files and begins reading them.
fn start(node: &Node, kubeconfig: &std::path::Path, data: &std::path::Path, flush: &str) -> Daemon {
    DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .kubernetes(node, kubeconfig, data)
        // These exercise collection; access control has its own test.
        .args(["--auth", "none"])
        .args(["--flush-interval", flush, "--pod-wait", "1s"])
        .start()
}

fn write(c: &mut Container, lines: &mut Vec<String>, n: usize) {
    for _ in 0..n {
        let text = format!("line {:05}", lines.len());
        c.write("stdout", testkit::now_ns(), text.as_bytes())
            .unwrap();
        lines.push(text);
    }
}

fn stored(data: &std::path::Path) -> Vec<String> {
    let (db, _) = Database::open(data, Config::default()).unwrap();
    let mut lines: Vec<String> = db
        .query(Query::new(vec![Matcher::equal("pod_name", "web-1")]))
        .unwrap()
        .map(|e| String::from_utf8(e.line).unwrap())
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_kill_in_the_first_seconds_loses_and_repeats_nothing() {
    let api = FakeApiServer::start();
    api.add_pod("default", "web-1", "uid-web", "node-1", &[("app", "web")]);
    // After the daemon is up: when the rotation happens, when the kill
    // comes (ms), and how many rotations (two: the first rotated file is
    // gzipped). All before the first flush, 5 s in.
    for (case, (rotate_after, kill_after, rotations)) in [
        (0, 0, 1),
        (0, 100, 1),
        (100, 400, 2),
        (500, 1_200, 1),
        (1_000, 1_500, 2),
        (300, 2_500, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(&dir.path().join("node")).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let data = dir.path().join("data");
        let mut c = node.start("default", "web-1", "uid-web", "nginx").unwrap();
        let mut lines = Vec::new();
        write(&mut c, &mut lines, 300);
        // A first start: flushes only every 5 s.
        let daemon = start(&node, &kubeconfig, &data, "5s");
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(rotate_after));
        for _ in 0..rotations {
            c.rotate().unwrap();
            write(&mut c, &mut lines, 100);
        }
        let left = Duration::from_millis(kill_after).saturating_sub(started.elapsed());
        std::thread::sleep(left);
        daemon.kill();
        write(&mut c, &mut lines, 50);
        // The restart catches up, then stops cleanly.
        let daemon = start(&node, &kubeconfig, &data, "100ms");
        let deadline = Instant::now() + Duration::from_secs(20);
        std::thread::sleep(Duration::from_secs(2));
        let status = daemon.terminate();
        assert!(status.success(), "{status}");
        let mut got = stored(&data);
        while got.len() < lines.len() && Instant::now() < deadline {
            let again = start(&node, &kubeconfig, &data, "100ms");
            std::thread::sleep(Duration::from_secs(1));
            again.terminate();
            got = stored(&data);
        }
        let mut want = lines.clone();
        want.sort();
        assert_eq!(got.len(), want.len(), "case {case}: every line, once");
        assert_eq!(got, want, "case {case}");
    }
}
