//! Finding the other daemons: from the EndpointSlices of the DaemonSet's
//! headless Service (list, then watch), leaving this node out, or from a
//! fixed list; `/status` shows them.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::api_server::FakeApiServer;
use testkit::daemon::{Daemon, DaemonCommand};
use testkit::slices::Member;

fn peers(daemon: &Daemon) -> Vec<Value> {
    let (_, body) = daemon.get("/status").unwrap_or_default();
    let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    status["peers"].as_array().cloned().unwrap_or_default()
}

fn wait_for(daemon: &Daemon, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = peers(daemon);
        if list.len() == count {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "peers never became {count}: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn member(address: &str, node: &str, ready: bool) -> Member {
    Member {
        address: address.into(),
        node: node.into(),
        ready,
    }
}

#[test]
fn peers_come_from_the_services_endpoint_slices() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let api = FakeApiServer::start();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let slices = api.slices();
    slices.set(
        "monitoring-rs",
        "monitoring-rs",
        8000,
        &[
            member("10.0.0.1", "node-1", true),
            member("10.0.0.2", "node-2", true),
            member("10.0.0.3", "node-3", false),
        ],
    );
    // Another Service's slices are not peers.
    slices.set(
        "monitoring-rs",
        "other",
        9000,
        &[member("10.9.9.9", "node-9", true)],
    );
    let daemon = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args(["--log-collector", "directory", "--node-name", "node-1"])
        .args(["--peer-service", "monitoring-rs/monitoring-rs"])
        .flag("--kubeconfig", &kubeconfig)
        .flag("--root-path", &logs)
        .flag("--data-directory", dir.path().join("data"))
        .on(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)))
        .quiet()
        .start();
    let list = wait_for(&daemon, 2);
    assert_eq!(list[0]["address"], "10.0.0.2:8000");
    assert_eq!(list[0]["node"], "node-2");
    assert_eq!(list[0]["ready"], true);
    assert_eq!(list[1]["ready"], false);
    // A new node joins: the watch brings it.
    slices.set(
        "monitoring-rs",
        "monitoring-rs",
        8000,
        &[
            member("10.0.0.1", "node-1", true),
            member("10.0.0.2", "node-2", true),
            member("10.0.0.3", "node-3", true),
            member("10.0.0.4", "node-4", true),
        ],
    );
    let list = wait_for(&daemon, 3);
    assert!(list.iter().all(|p| p["ready"] == true), "{list:?}");
    assert!(daemon.terminate().success());
}

#[test]
fn a_fixed_list_without_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let daemon = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args([
            "--log-collector",
            "directory",
            "--peers",
            "127.0.0.3:8000,127.0.0.4:8000",
        ])
        .flag("--root-path", &logs)
        .flag("--data-directory", dir.path().join("data"))
        .on(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 12)))
        .quiet()
        .start();
    let list = wait_for(&daemon, 2);
    assert_eq!(list[1]["address"], "127.0.0.4:8000");
    assert!(daemon.terminate().success());
}
