//! Rotations while monitoring-rs is down: the kubelet renames 0.log and, at
//! the next rotation, gzips it. On start the collector finds the file it had
//! a checkpoint for among the rotated files and reads the rest of it, then
//! the newer rotated files whole, then the live file: nothing lost, nothing
//! repeated.

use std::collections::BTreeMap;
use std::time::Duration;

use monitoring_rs::log_collector::kubernetes::metadata::PodCache;
use monitoring_rs::log_collector::kubernetes::{KubernetesCollector, KubernetesConfig};
use monitoring_rs::log_database::WriteBatch;
use monitoring_rs::watcher::inotify::InotifyWatcher;
use testkit::kubelet::{Container, Node};

fn collect(node: &Node, checkpoints: &mut BTreeMap<String, Vec<u8>>) -> Vec<(i64, String)> {
    let mut config = KubernetesConfig::new(node.containers(), "node-1");
    config.pod_wait = Duration::ZERO;
    let watcher = Box::new(InotifyWatcher::new().unwrap());
    let mut collector =
        KubernetesCollector::new(config, watcher, checkpoints, PodCache::default()).unwrap();
    let mut out = WriteBatch::default();
    let mut lines = Vec::new();
    for _ in 0..20 {
        collector
            .next_batch(&mut out, Some(Duration::from_millis(100)))
            .unwrap();
        for s in &out.streams {
            lines.extend(
                s.entries
                    .iter()
                    .map(|(t, l)| (t, String::from_utf8(l.to_vec()).unwrap())),
            );
        }
        for (k, v) in &out.checkpoints {
            match v {
                Some(v) => checkpoints.insert(k.clone(), v.clone()),
                None => checkpoints.remove(k),
            };
        }
    }
    lines.sort();
    lines
}

fn write(c: &mut Container, from: usize, to: usize) -> Vec<(i64, String)> {
    let t0 = testkit::a_day_ago_on_the_hour();
    (from..to)
        .map(|i| {
            let ts = t0 + i as i64 * 1_000_000;
            let text = format!("line {i:03}");
            c.write("stdout", ts, text.as_bytes()).unwrap();
            (ts, text)
        })
        .collect()
}

#[test]
fn rotated_and_gzipped_while_down_is_read_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(dir.path()).unwrap();
    let mut c = node.start("default", "web-1", "uid-1", "nginx").unwrap();
    let mut checkpoints = BTreeMap::new();
    let first = write(&mut c, 0, 10);
    assert_eq!(collect(&node, &mut checkpoints), first);

    // Down: more lines, two rotations (the first rotated file gets gzipped).
    let mut missed = write(&mut c, 10, 15);
    c.rotate().unwrap();
    missed.extend(write(&mut c, 15, 20));
    c.rotate().unwrap();
    missed.extend(write(&mut c, 20, 25));

    assert_eq!(
        collect(&node, &mut checkpoints),
        missed,
        "exactly the lines written while down"
    );
    let more = write(&mut c, 25, 27);
    assert_eq!(collect(&node, &mut checkpoints), more);
}
