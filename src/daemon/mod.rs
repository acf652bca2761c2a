//! The daemon's lifecycle: what starts, in which order, and how it stops.
//!
//! [`run`] opens the store, starts its maintenance (flush + retention), the
//! collector thread and the HTTP API, and waits for the [`Shutdown`]. On
//! shutdown (SIGTERM, or a collector that failed) the order is fixed:
//!
//! 1. the collector stops between two batches (its blocking wait is woken);
//! 2. the store's final flush commits the last lines with their checkpoints;
//! 3. only then does the HTTP server stop, so `/ready` and queries answer
//!    until the data is safe, and follows and tails end cleanly.

pub mod ingest;
mod kube_client;
mod stdout;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::api::auth::{AuthMode, AuthTtls, Reviewer};
use crate::api::{self, ApiConfig, AppState};
use crate::log_collector::checkpoint::{CheckpointError, CheckpointSet};
use crate::log_collector::directory::{CollectorError, DirectoryCollector, DirectoryConfig};
use crate::log_collector::kubernetes::metadata::{PodCache, watch_pods};
use crate::log_collector::kubernetes::{KubernetesCollector, KubernetesConfig};
use crate::log_collector::status::CollectorReport;
use crate::log_database::{Config as StoreConfig, Database, StoreError};
use crate::memory::MemoryLimit;
use crate::shutdown::Shutdown;
use crate::watcher::{self, WatcherError};

pub use self::kube_client::KubeClientError;

/// Which collector feeds the store.
#[derive(Clone, Debug)]
pub enum Collector {
    /// Every file under the root, labelled with its path.
    Directory,
    /// Kubernetes container logs, labelled with their pod.
    Kubernetes(KubernetesSettings),
}

/// How the Kubernetes collector finds and labels pods.
#[derive(Clone, Debug, Default)]
pub struct KubernetesSettings {
    /// This node (only its pods are watched); `None` watches every node.
    pub node_name: Option<String>,
    /// A kubeconfig file; `None` uses KUBECONFIG, ~/.kube/config or the
    /// in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Pod labels that become stream labels (all if empty).
    pub include_labels: Vec<String>,
    /// Pod labels that never become stream labels.
    pub exclude_labels: Vec<String>,
    /// Pod annotations that become stream labels.
    pub include_annotations: Vec<String>,
    /// How long a file whose pod is unknown waits for its metadata.
    pub pod_wait: Duration,
    /// How long a deleted pod's metadata is kept for its last lines.
    pub deleted_pod_grace: Duration,
}

/// Where collected lines go.
#[derive(Clone, Debug)]
pub enum Output {
    /// The embedded store, served over HTTP, fed by this collector.
    Store(Collector),
    /// The directory collector's lines as JSON on stdout (for debugging);
    /// checkpoints go to a file in the data directory.
    Stdout,
}

/// Everything the daemon needs, as the flags (or a test) give it.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The tailed directory and how files are read.
    pub directory: DirectoryConfig,
    /// Where lines go, and which collector feeds the store.
    pub output: Output,
    /// Where the store (or the checkpoint file) lives.
    pub data_directory: PathBuf,
    /// Retention and sizes of the store.
    pub store: StoreConfig,
    /// Writes become durable within this time.
    pub flush_interval: Duration,
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Limits of the API.
    pub api: ApiConfig,
    /// The memory ceiling (see [`crate::memory`]).
    pub memory: MemoryLimit,
    /// How API requests are authenticated.
    pub auth: AuthMode,
    /// The kubeconfig for `--auth kubernetes` (else the usual places).
    pub auth_kubeconfig: Option<PathBuf>,
    /// How long review answers are kept.
    pub auth_ttls: AuthTtls,
    /// Where the other daemons are.
    pub peers: PeerConfig,
    /// How to ask them.
    pub peer_client: crate::cluster::ClientConfig,
    /// Where committed entries are forwarded.
    pub sinks: Vec<crate::forward::SinkConfig>,
}

/// How the other daemons of the cluster are found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PeerConfig {
    /// None: this daemon answers for itself.
    #[default]
    None,
    /// A fixed list (`--peers`).
    Fixed(Vec<SocketAddr>),
    /// The endpoints of a Service (`--peer-service namespace/name`).
    Service {
        /// The Service's namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// This node, left out of the peers.
        own_node: Option<String>,
    },
}

/// Why the daemon could not start or stopped with an error; each message
/// names the flag or resource an operator should look at.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store could not be opened.
    #[error("cannot open the log store in --data-directory: {0}")]
    OpenStore(#[source] StoreError),
    /// The final flush on shutdown failed.
    #[error(
        "cannot flush the log store on shutdown (the lines since the last flush are read again on the next start): {0}"
    )]
    FinalFlush(#[source] StoreError),
    /// The collector could not start or failed.
    #[error("the collector failed: {0}")]
    Collector(#[from] CollectorError),
    /// The file-system watcher could not be created.
    #[error(transparent)]
    Watcher(#[from] WatcherError),
    /// Checkpoints (stdout mode) could not be read or saved.
    #[error(
        "{0}; with --output stdout, lines printed since the last save are printed again after a restart"
    )]
    Checkpoints(#[from] CheckpointError),
    /// No Kubernetes client.
    #[error(transparent)]
    Kubernetes(#[from] KubeClientError),
    /// Forwarding could not start.
    #[error("{0}; check the --otlp-* and --loki-* flags")]
    Forward(#[source] crate::forward::ForwardError),
    /// The client for peers could not be set up (the CA file).
    #[error("{0}; check --peer-ca-file and --peer-server-name")]
    Peers(#[source] crate::cluster::ClusterError),
    /// The API address cannot be bound.
    #[error("cannot listen on --listen {address}: {source}")]
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("the HTTP server failed: {0}")]
    Server(#[source] std::io::Error),
    /// Printing lines failed (stdout mode).
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    /// A thread or the async runtime could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        /// What could not start.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A daemon thread panicked: a bug.
    #[error("the {0} thread panicked; this is a bug, please report it with the log above")]
    Panicked(&'static str),
}

/// How long the API waits at start for the collector's first batch (the
/// announcement of the files it found) to be written.
const STARTUP_ANNOUNCE_WAIT: Duration = Duration::from_secs(5);

fn start_error(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Start { what, source }
}

/// Runs the daemon until `shutdown` is triggered (or the collector fails),
/// then stops in the order described in the module docs.
pub fn run(config: DaemonConfig, shutdown: Shutdown) -> Result<(), DaemonError> {
    match &config.output {
        Output::Store(collector) => run_into_store(&config, collector, shutdown),
        Output::Stdout => stdout::run(&config, shutdown),
    }
}

fn run_into_store(
    config: &DaemonConfig,
    collector: &Collector,
    shutdown: Shutdown,
) -> Result<(), DaemonError> {
    let (db, report) = Database::open(&config.data_directory, config.store.clone())
        .map_err(DaemonError::OpenStore)?;
    let db = Arc::new(db);
    tracing::info!(?report, stats = ?db.stats(), "Opened the log store.");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(start_error("the async runtime"))?;
    let mut source = start_collector(config, collector, &db, &runtime)?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .map_err(|source| DaemonError::Listen {
            address: config.listen,
            source,
        })?;
    tracing::info!(address = %config.listen, "Serving the HTTP API.");

    let waker = source.directory().waker();
    shutdown.on_trigger(move || waker.wake());
    let maintenance = db
        .start_maintenance(config.flush_interval)
        .map_err(start_error("the store's maintenance thread"))?;
    // Sinks read from the store, so they start after it and stop before
    // its final flush (which commits their last cursors).
    let (sinks, sink_threads) =
        crate::forward::start(db.clone(), config.sinks.clone(), shutdown.clone())
            .map_err(DaemonError::Forward)?;
    let status = Arc::new(RwLock::new(CollectorReport::default()));
    // The server stops once the collector has stopped and the store is
    // flushed: this channel says so.
    let (collected_tx, collected_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let collecting = {
        let (db, status, shutdown) = (db.clone(), status.clone(), shutdown.clone());
        let memory = config.memory;
        std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || {
                let mut updater = ingest::StatusUpdater::new(status);
                let started = move || {
                    let _ = started_tx.send(());
                };
                let result =
                    ingest::run(&mut *source, &db, &mut updater, &shutdown, memory, started);
                // A failing collector takes the daemon down with it.
                shutdown.trigger();
                tracing::info!(collector = ?source.directory().stats(), "Collector stopped.");
                for sink in sink_threads {
                    let _ = sink.join();
                }
                let flushed = maintenance.stop();
                let _ = collected_tx.send(());
                result?;
                flushed.map_err(DaemonError::FinalFlush)
            })
            .map_err(start_error("the collector thread"))?
    };

    let reviewer = match config.auth {
        AuthMode::Kubernetes => {
            let client =
                runtime.block_on(kube_client::client(config.auth_kubeconfig.as_deref()))?;
            tracing::info!(
                "API requests need a bearer token; reads are checked with the Kubernetes API (TokenReview, SubjectAccessReview on pods/log)."
            );
            Some(Arc::new(Reviewer::new(client, config.auth_ttls)))
        }
        AuthMode::None => {
            if matches!(collector, Collector::Kubernetes(_)) && !config.listen.ip().is_loopback() {
                tracing::warn!(address = %config.listen, "--auth none: anyone who can reach this address reads every container log of the node. Use --auth kubernetes (the default for this collector).");
            }
            None
        }
    };
    let peers = match &config.peers {
        PeerConfig::None => crate::cluster::Peers::default(),
        // The same list may be given to every daemon: leave this one out.
        PeerConfig::Fixed(list) => crate::cluster::Peers::fixed(
            &list
                .iter()
                .copied()
                .filter(|a| *a != config.listen)
                .collect::<Vec<_>>(),
        ),
        PeerConfig::Service {
            namespace,
            name,
            own_node,
        } => {
            let client =
                runtime.block_on(kube_client::client(config.auth_kubeconfig.as_deref()))?;
            let peers = crate::cluster::Peers::default();
            runtime.spawn(crate::cluster::watch_peers(
                client,
                namespace.clone(),
                name.clone(),
                own_node.clone(),
                peers.clone(),
            ));
            peers
        }
    };
    let state = AppState {
        collector: status,
        shutdown: shutdown.clone(),
        memory: config.memory,
        reviewer,
        peers,
        sinks,
        peer_client: Arc::new(
            crate::cluster::Client::new(config.peer_client.clone()).map_err(DaemonError::Peers)?,
        ),
        ..AppState::with_config(db.clone(), config.api.clone())
    };
    // The API answers once the files found at start are announced to the
    // store: a daemon seen running (a probe, a test, an operator) is then
    // one whose next start knows every file it found, even if it is killed
    // at once and the files rotate meanwhile. A collector slow to begin
    // does not hold the API back for long.
    let _ = started_rx.recv_timeout(STARTUP_ANNOUNCE_WAIT);
    let served = runtime.block_on(api::serve(listener, state, async move {
        let _ = collected_rx.await;
    }));
    // Should the server fail first, the collector still stops cleanly.
    shutdown.trigger();
    let collected = collecting
        .join()
        .unwrap_or(Err(DaemonError::Panicked("collector")));
    tracing::info!(store = ?db.stats(), "Stopped.");
    served.map_err(DaemonError::Server)?;
    collected
}

/// The chosen collector, resuming from the store's checkpoints.
fn start_collector(
    config: &DaemonConfig,
    collector: &Collector,
    db: &Database,
    runtime: &tokio::runtime::Runtime,
) -> Result<Box<dyn ingest::Collect>, DaemonError> {
    let directory = config.directory.clone();
    Ok(match collector {
        Collector::Directory => {
            let checkpoints = CheckpointSet::from_store(&db.checkpoints());
            let collector =
                DirectoryCollector::new(directory, watcher::platform_watcher()?, &checkpoints)?;
            Box::new(ingest::DirectorySource::new(collector))
        }
        Collector::Kubernetes(k) => {
            if k.node_name.is_none() {
                tracing::warn!(
                    "No --node-name (NODE_NAME): watching the pods of every node. In a cluster, set NODE_NAME from spec.nodeName."
                );
            }
            let client = runtime.block_on(kube_client::client(k.kubeconfig.as_deref()))?;
            let cache = PodCache::default();
            runtime.spawn(watch_pods(
                client,
                k.node_name.clone(),
                cache.clone(),
                k.deleted_pod_grace,
            ));
            let k8s = KubernetesConfig {
                directory,
                node_name: k.node_name.clone().unwrap_or_default(),
                include_labels: k.include_labels.clone(),
                exclude_labels: k.exclude_labels.clone(),
                include_annotations: k.include_annotations.clone(),
                pod_wait: k.pod_wait,
                ..KubernetesConfig::new("", "")
            };
            Box::new(KubernetesCollector::new(
                k8s,
                watcher::platform_watcher()?,
                &db.checkpoints(),
                cache,
            )?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use testkit::daemon::get;

    /// With an hour's flush interval only the shutdown's final flush can
    /// make the lines durable: after `run` returns, a reopened store holds
    /// them and the checkpoint that covers them.
    #[test]
    fn shutdown_stops_collecting_flushes_then_stops_serving() {
        let dir = tempfile::tempdir().unwrap();
        let (root, data) = (dir.path().join("logs"), dir.path().join("data"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.log"), "one\ntwo\n").unwrap();
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let listen = SocketAddr::new(ip, testkit::daemon::free_port(ip));
        let config = DaemonConfig {
            directory: DirectoryConfig::new(&root),
            output: Output::Store(Collector::Directory),
            data_directory: data.clone(),
            store: StoreConfig::default(),
            flush_interval: Duration::from_secs(3600),
            listen,
            api: ApiConfig::default(),
            auth: AuthMode::None,
            auth_kubeconfig: None,
            auth_ttls: AuthTtls::default(),
            peers: PeerConfig::None,
            peer_client: crate::cluster::ClientConfig::default(),
            sinks: Vec::new(),
            memory: MemoryLimit::default(),
        };
        let shutdown = Shutdown::new();
        let running = std::thread::spawn({
            let shutdown = shutdown.clone();
            move || run(config, shutdown)
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !get(listen, "/status").is_some_and(|(_, s)| s.contains("\"lines_total\":2")) {
            assert!(Instant::now() < deadline, "the daemon never read the file");
            std::thread::sleep(Duration::from_millis(20));
        }
        shutdown.trigger();
        running.join().unwrap().unwrap();
        assert!(get(listen, "/ready").is_none(), "the server has stopped");
        let (db, _) = Database::open(&data, StoreConfig::default()).unwrap();
        assert_eq!(db.stats().entries, 2);
        assert_eq!(db.checkpoints().len(), 1);
    }
}
