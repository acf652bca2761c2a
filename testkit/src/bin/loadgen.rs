//! Runs a stand-in node: a fake Kubernetes API server and a kubelet-like
//! writer producing container logs at a chosen rate, with a skewed rate per
//! container, rotation at a size limit and pod churn. Each pod runs one of
//! ten kinds of application (Spring, zap, nginx, Envoy, Python, pino,
//! logfmt, Redis, a controller, PostgreSQL) and logs as it would; a second
//! container is an Envoy sidecar. `--backlog-bytes` first writes a backlog
//! as fast as it can, for watching a catch-up. Point monitoring-rs at
//! it to watch it work without a cluster:
//!
//! ```sh
//! cargo run -p monitoring-rs-testkit --bin loadgen -- --pods 50 --rate 2000 --out /tmp/node
//! cargo run -- --log-collector kubernetes --root-path /tmp/node/var/log/containers --kubeconfig /tmp/node/kubeconfig
//! ```
//!
//! With `--user alice-token=alice:team-1` the fake API server also knows a
//! user who may read one namespace: open the daemon's page and give it
//! `alice-token`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use testkit::api_server::FakeApiServer;
use testkit::apps::{App, PROFILES, Profile};
use testkit::kubelet::{Container, Node};
use testkit::messages::Rng;
use testkit::reviews::Grant;

/// A stand-in Kubernetes node writing container logs.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Args {
    /// Pods running at any time.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Containers per pod.
    #[arg(long, default_value_t = 1)]
    containers: usize,
    /// Lines per second, over all containers (a few hot ones write most).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Where the node lives: <out>/var/log/{pods,containers} and <out>/kubeconfig.
    #[arg(long, default_value = "/tmp/node")]
    out: PathBuf,
    /// The node's name (pods are scheduled here).
    #[arg(long, default_value = "node-1")]
    node_name: String,
    /// Rotate a container's log at this size, as the kubelet does.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    rotate_bytes: u64,
    /// Replace one pod (delete it, start another) this often; 0 = never.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    churn_every: Duration,
    /// A user of the fake API server, `TOKEN=USER:NAMESPACE` (`*`: every
    /// namespace): the token authenticates as USER, who may read the pod
    /// logs of NAMESPACE. Repeatable; for trying `--auth kubernetes`.
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<(String, String, String)>,
    /// Before writing at `--rate`, write this many bytes of logs as fast
    /// as possible, round robin over the containers (rotating as usual).
    #[arg(long, default_value_t = 0)]
    backlog_bytes: u64,
    /// Stop after this long; 0 = run until interrupted.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

struct Pod {
    namespace: String,
    name: String,
    uid: String,
    containers: Vec<(Container, App)>,
}

fn parse_user(text: &str) -> Result<(String, String, String), String> {
    let (token, rest) = text
        .split_once('=')
        .ok_or("expected TOKEN=USER:NAMESPACE")?;
    let (user, namespace) = rest
        .split_once(':')
        .ok_or("expected TOKEN=USER:NAMESPACE")?;
    if token.is_empty() || user.is_empty() || namespace.is_empty() {
        return Err("expected TOKEN=USER:NAMESPACE, none of them empty".into());
    }
    Ok((token.into(), user.into(), namespace.into()))
}

fn now_ns() -> i64 {
    testkit::now_ns()
}

/// Writes the application's next line to its container, rotating at
/// `rotate_bytes`; returns the line's length.
fn log(
    container: &mut Container,
    app: &mut App,
    line: &mut Vec<u8>,
    rotate_bytes: u64,
    rotations: &mut u64,
) -> anyhow::Result<u64> {
    let ts = now_ns();
    let stream = app.line(ts, line);
    container.write(stream, ts, line)?;
    if container.size()? >= rotate_bytes {
        container.rotate()?;
        *rotations += 1;
    }
    Ok(line.len() as u64)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let node = Node::new(&args.out).context("cannot create --out")?;
    let api = FakeApiServer::start();
    for (token, user, namespace) in &args.users {
        api.reviews().add_user(token, user, &[]);
        let grant = if namespace == "*" {
            Grant::Cluster
        } else {
            Grant::Namespace(namespace.clone())
        };
        api.reviews().grant(&format!("user:{user}"), grant);
    }
    let kubeconfig = args.out.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)
        .context("cannot write the kubeconfig")?;
    eprintln!(
        "fake API server at {}; kubeconfig {}",
        api.url(),
        kubeconfig.display()
    );
    eprintln!("logs under {}", node.containers().display());

    let mut rng = Rng(0x5eed);
    let mut serial = 0usize;
    let mut start_pod = |api: &FakeApiServer, rng: &mut Rng| -> anyhow::Result<Pod> {
        serial += 1;
        let profile = PROFILES[serial % PROFILES.len()];
        let app = profile.app_name();
        let namespace = format!("team-{}", serial % 4);
        let name = format!("{app}-{serial:05}-{:05x}", rng.below(1 << 20));
        let uid = format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            rng.next_u64() as u32,
            serial,
            rng.below(1 << 48)
        );
        api.add_pod(
            &namespace,
            &name,
            &uid,
            &args.node_name,
            &[("app", app), ("app.kubernetes.io/part-of", "shop")],
        );
        let containers = (0..args.containers)
            .map(|c| {
                let (container, profile) = if c == 0 {
                    (app.to_string(), profile)
                } else if c == 1 {
                    ("istio-proxy".to_string(), Profile::Istio)
                } else {
                    (format!("sidecar-{c}"), Profile::Logfmt)
                };
                let seed = (serial * 8 + c) as u64;
                Ok((
                    node.start(&namespace, &name, &uid, &container)?,
                    App::new(profile, seed),
                ))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Pod {
            namespace,
            name,
            uid,
            containers,
        })
    };
    let mut pods: Vec<Pod> = (0..args.pods)
        .map(|_| start_pod(&api, &mut rng))
        .collect::<anyhow::Result<_>>()?;

    if args.backlog_bytes > 0 {
        let started = Instant::now();
        let (mut bytes, mut lines, mut rotations) = (0u64, 0u64, 0u64);
        let mut line = Vec::with_capacity(512);
        'backlog: loop {
            for pod in &mut pods {
                for (container, app) in &mut pod.containers {
                    bytes += log(container, app, &mut line, args.rotate_bytes, &mut rotations)?;
                    lines += 1;
                    if bytes >= args.backlog_bytes {
                        break 'backlog;
                    }
                }
            }
        }
        eprintln!(
            "backlog: {lines} lines ({bytes} bytes), {rotations} rotations, in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let mut next = Instant::now();
    let mut next_churn = Instant::now() + args.churn_every;
    let mut next_report = Instant::now() + Duration::from_secs(5);
    let (mut written, mut bytes, mut rotations, mut carry) = (0u64, 0u64, 0u64, 0.0f64);
    let mut line = Vec::with_capacity(512);
    while !stop.load(Ordering::Relaxed)
        && (args.duration.is_zero() || started.elapsed() < args.duration)
    {
        carry += args.rate as f64 / 100.0;
        let lines = carry as u64;
        carry -= lines as f64;
        let slots: Vec<(usize, usize)> = pods
            .iter()
            .enumerate()
            .flat_map(|(p, pod)| (0..pod.containers.len()).map(move |c| (p, c)))
            .collect();
        for _ in 0..lines {
            // Skewed: container k is chosen with weight ~ 1/(k+1).
            let u = rng.below(1 << 20) as f64 / (1u64 << 20) as f64;
            let k = ((u * (slots.len() as f64 + 1.0).ln()).exp() as usize).saturating_sub(1);
            let (p, c) = slots[k.min(slots.len() - 1)];
            let (container, app) = &mut pods[p].containers[c];
            bytes += log(container, app, &mut line, args.rotate_bytes, &mut rotations)?;
            written += 1;
        }
        if !args.churn_every.is_zero() && Instant::now() >= next_churn {
            next_churn += args.churn_every;
            let gone = pods.remove(rng.below(pods.len() as u64) as usize);
            api.delete_pod(&gone.namespace, &gone.name);
            // The kubelet removes the logs a little after the pod is gone.
            let (root, ns, name, uid) = (
                args.out.clone(),
                gone.namespace.clone(),
                gone.name.clone(),
                gone.uid.clone(),
            );
            drop(gone);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                let _ = Node::new(&root).and_then(|n| n.remove_pod(&ns, &name, &uid));
            });
            pods.push(start_pod(&api, &mut rng)?);
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(5);
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{written} lines ({:.0}/s, {:.1} MB/s), {rotations} rotations, {} pods",
                written as f64 / secs,
                bytes as f64 / secs / 1e6,
                pods.len()
            );
        }
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    eprintln!(
        "wrote {written} lines ({bytes} bytes) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
