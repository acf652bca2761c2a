//! The `monitoring-rs` daemon: flags and wiring. The work is in the library.

use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use monitoring_rs::api::{self, ApiConfig, AppState};
use monitoring_rs::ingest::{self, Flusher};
use monitoring_rs::log_collector::checkpoint::{CheckpointFile, CheckpointSet};
use monitoring_rs::log_collector::directory::batch::Batch;
use monitoring_rs::log_collector::directory::{DirectoryCollector, DirectoryConfig, ReadFrom};
use monitoring_rs::log_collector::kubernetes::metadata::{PodCache, watch_pods};
use monitoring_rs::log_collector::kubernetes::{KubernetesCollector, KubernetesConfig};
use monitoring_rs::log_database::{Config as StoreConfig, Database};
use monitoring_rs::watcher;
use tracing_subscriber::EnvFilter;

/// Which collector feeds the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CollectorKind {
    /// Every file under --root-path, labelled with its path.
    Directory,
    /// Kubernetes container logs, labelled with their pod.
    Kubernetes,
}

/// Where collected lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// The embedded log store in --data-directory.
    Store,
    /// Print each line as a JSON object on stdout (for debugging).
    Stdout,
}

/// A node-local log collector: tails log files, labels and keeps the lines,
/// and serves them over HTTP.
#[derive(Debug, Parser)]
#[command(name = "monitoring-rs", version, about)]
struct Args {
    /// Which collector to run.
    #[arg(long, env = "LOG_COLLECTOR", value_enum, ignore_case = true, default_value_t = CollectorKind::Kubernetes)]
    log_collector: CollectorKind,

    /// Directory to tail (default for kubernetes: /var/log/containers;
    /// required for directory).
    #[arg(long, env = "ROOT_PATH")]
    root_path: Option<PathBuf>,

    /// Where checkpoints (and the store) live.
    #[arg(long, env = "DATA_DIRECTORY", default_value = "./.data")]
    data_directory: PathBuf,

    /// Address of the HTTP API.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8000")]
    listen: SocketAddr,

    /// Where collected lines go.
    #[arg(long, env = "OUTPUT", value_enum, ignore_case = true, default_value_t = Output::Store)]
    output: Output,

    /// Entries older than this are deleted.
    #[arg(long, env = "RETENTION_PERIOD", default_value = "7d", value_parser = humantime::parse_duration)]
    retention_period: Duration,

    /// The oldest entries are deleted while the store is larger than this
    /// (e.g. 10GiB, 500MB).
    #[arg(long, env = "RETENTION_SIZE", default_value = "10GiB", value_parser = parse_size)]
    retention_size: u64,

    /// This node's name (Kubernetes collector; the DaemonSet sets NODE_NAME
    /// from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,

    /// A kubeconfig file to reach the API server outside a cluster
    /// (default: KUBECONFIG, ~/.kube/config, or the in-cluster account).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Pod labels that become stream labels (comma-separated; all if empty).
    #[arg(long, env = "INCLUDE_POD_LABELS", value_delimiter = ',')]
    include_pod_labels: Vec<String>,

    /// Pod labels that never become stream labels (comma-separated).
    #[arg(
        long,
        env = "EXCLUDE_POD_LABELS",
        value_delimiter = ',',
        default_value = "pod-template-hash,controller-revision-hash,pod-template-generation"
    )]
    exclude_pod_labels: Vec<String>,

    /// Pod annotations that become stream labels (comma-separated).
    #[arg(long, env = "INCLUDE_POD_ANNOTATIONS", value_delimiter = ',')]
    include_pod_annotations: Vec<String>,

    /// How long a log file whose pod is not known yet waits for its metadata.
    #[arg(long, env = "POD_WAIT", default_value = "5s", value_parser = humantime::parse_duration)]
    pod_wait: Duration,

    /// How long a deleted pod's metadata is kept for its last lines.
    #[arg(long, env = "DELETED_POD_GRACE", default_value = "5m", value_parser = humantime::parse_duration)]
    deleted_pod_grace: Duration,

    /// Largest number of lines a query may ask for.
    #[arg(long, env = "MAX_LIMIT", default_value_t = 5000)]
    max_limit: usize,

    /// Longest time range a query may cover.
    #[arg(long, env = "MAX_QUERY_RANGE", default_value = "31d", value_parser = humantime::parse_duration)]
    max_query_range: Duration,

    /// How long a query may run before it is cancelled.
    #[arg(long, env = "QUERY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    query_timeout: Duration,

    /// Written entries are made durable within this time; a crash re-reads
    /// at most this much from the log files.
    #[arg(long, env = "FLUSH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    flush_interval: Duration,

    /// Where to start files found at start-up that have no checkpoint.
    #[arg(long, env = "READ_FROM", value_enum, ignore_case = true, default_value_t = ReadFrom::Head)]
    read_from: ReadFrom,

    /// Lines longer than this are split into pieces of this size.
    #[arg(long, env = "MAX_LINE_BYTES", default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    max_line_bytes: u64,

    /// How long a rotated or deleted file stays open after its last write.
    #[arg(long, env = "ROTATE_WAIT", default_value = "5s", value_parser = humantime::parse_duration)]
    rotate_wait: Duration,

    /// After a file changes, wait this long for more writes before reading:
    /// a busy node then costs a few large reads instead of one per line.
    /// It is also the least delay before a line can be queried.
    #[arg(long, env = "BATCH_WAIT", default_value = "50ms", value_parser = humantime::parse_duration)]
    batch_wait: Duration,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The chain of causes without a backtrace: operators read this.
            // Our error messages already name their cause, so skip repeats.
            let mut message = error.to_string();
            for cause in error.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message = format!("{message}: {cause}");
                }
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .init();
    let args = Args::parse();
    raise_open_file_limit();

    let root = match (args.log_collector, &args.root_path) {
        (_, Some(root)) => root.clone(),
        (CollectorKind::Directory, None) => {
            bail!("--root-path (ROOT_PATH) is required with --log-collector directory")
        }
        (CollectorKind::Kubernetes, None) => PathBuf::from("/var/log/containers"),
    };
    tracing::info!(collector = ?args.log_collector, root = %root.display(), output = ?args.output, "Starting.");
    let config = DirectoryConfig {
        read_from: args.read_from,
        max_line_bytes: args.max_line_bytes as usize,
        rotate_wait: args.rotate_wait,
        batch_wait: args.batch_wait,
        ..DirectoryConfig::new(root)
    };
    let stop = Arc::new(AtomicBool::new(false));
    match (args.output, args.log_collector) {
        (Output::Store, _) => run_into_store(&args, config, stop),
        (Output::Stdout, CollectorKind::Directory) => run_to_stdout(&args, config, stop),
        (Output::Stdout, CollectorKind::Kubernetes) => {
            bail!(
                "--output stdout works with --log-collector directory; the Kubernetes collector writes to the store"
            )
        }
    }
}

/// A Kubernetes client: from --kubeconfig if given, else the usual places
/// (KUBECONFIG, ~/.kube/config, or the in-cluster service account).
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes connection: not in a cluster and no kubeconfig; pass --kubeconfig",
        )?,
    };
    kube::Client::try_from(config).context("cannot create the Kubernetes client")
}

/// Collects into the embedded store; checkpoints live in the store.
fn run_into_store(
    args: &Args,
    config: DirectoryConfig,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let store_config = StoreConfig {
        retention_period: args.retention_period,
        retention_size: args.retention_size,
        ..StoreConfig::default()
    };
    let (db, report) = Database::open(&args.data_directory, store_config)
        .context("cannot open the log store in --data-directory")?;
    let db = Arc::new(db);
    tracing::info!(?report, stats = ?db.stats(), "Opened the log store.");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut source: Box<dyn ingest::Collect> = match args.log_collector {
        CollectorKind::Directory => {
            let checkpoints = CheckpointSet::from_store(&db.checkpoints());
            let collector =
                DirectoryCollector::new(config, watcher::platform_watcher()?, &checkpoints)?;
            Box::new(ingest::DirectorySource::new(collector))
        }
        CollectorKind::Kubernetes => {
            let node = args.node_name.clone();
            if node.is_none() {
                tracing::warn!(
                    "No --node-name (NODE_NAME): watching the pods of every node. In a cluster, set NODE_NAME from spec.nodeName."
                );
            }
            let client = runtime.block_on(kube_client(args.kubeconfig.as_deref()))?;
            let cache = PodCache::default();
            runtime.spawn(watch_pods(
                client,
                node.clone(),
                cache.clone(),
                args.deleted_pod_grace,
            ));
            let k8s = KubernetesConfig {
                directory: config,
                node_name: node.unwrap_or_default(),
                include_labels: args.include_pod_labels.clone(),
                exclude_labels: args.exclude_pod_labels.clone(),
                include_annotations: args.include_pod_annotations.clone(),
                pod_wait: args.pod_wait,
                ..KubernetesConfig::new("", "")
            };
            Box::new(KubernetesCollector::new(
                k8s,
                watcher::platform_watcher()?,
                &db.checkpoints(),
                cache,
            )?)
        }
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .with_context(|| format!("cannot listen on --listen {}", args.listen))?;
    tracing::info!(address = %args.listen, "Serving the HTTP API.");

    // One signal stops everything: the collector loop, the server, tails.
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let waker = source.directory().waker();
    let stop_all = {
        let (stop, shutdown_tx) = (stop.clone(), shutdown_tx.clone());
        move || {
            stop.store(true, Ordering::Relaxed);
            waker.wake();
            let _ = shutdown_tx.send(true);
        }
    };
    spawn_signal_thread(stop_all.clone())?;

    let flusher =
        Flusher::start(db.clone(), args.flush_interval).context("cannot start the flusher")?;
    let status = Arc::new(std::sync::RwLock::new(ingest::Status::default()));
    let collecting = {
        let (db, status, stop) = (db.clone(), status.clone(), stop.clone());
        std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || {
                let mut updater = ingest::StatusUpdater::new(status);
                let result = ingest::run(&mut *source, &db, &flusher, &mut updater, &stop)
                    .context("the collector failed");
                // Whatever happened, make what was written durable.
                let flushed = flusher.stop();
                tracing::info!(collector = ?source.directory().stats(), "Collector stopped.");
                // A failing collector takes the server down with it.
                stop_all();
                result.and(flushed.context("cannot flush the log store on shutdown"))
            })
            .context("cannot start the collector thread")?
    };

    let api_config = ApiConfig {
        max_limit: args.max_limit,
        max_range: args.max_query_range,
        query_timeout: args.query_timeout,
        ..ApiConfig::default()
    };
    let state = AppState {
        config: api_config,
        status,
        shutdown: shutdown_rx.clone(),
        ..AppState::new(db.clone())
    };
    let mut until_stopped = shutdown_rx;
    let served = runtime.block_on(api::serve(listener, state, async move {
        let _ = until_stopped.wait_for(|stopped| *stopped).await;
    }));
    let collected = collecting
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the collector thread panicked")));
    tracing::info!(store = ?db.stats(), "Stopped.");
    served.context("the HTTP server failed")?;
    collected
}

/// Prints lines to stdout; checkpoints go to a file in the data directory.
fn run_to_stdout(
    args: &Args,
    config: DirectoryConfig,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let checkpoint_file = CheckpointFile::in_directory(&args.data_directory)
        .context("cannot use --data-directory")?;
    let mut checkpoints = checkpoint_file.load()?;
    let mut collector =
        DirectoryCollector::new(config, watcher::platform_watcher()?, &checkpoints)?;
    let waker = collector.waker();
    let stopping = stop.clone();
    spawn_signal_thread(move || {
        stopping.store(true, Ordering::Relaxed);
        waker.wake();
    })?;

    let mut out = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let mut batch = Batch::default();
    while !stop.load(Ordering::Relaxed) {
        collector.next_batch(&mut batch, None)?;
        if batch.is_idle() {
            continue;
        }
        match print_batch(&mut out, &batch) {
            Ok(()) => {}
            // The reader went away (`| head`): stop without committing.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(e).context("cannot write to stdout"),
        }
        checkpoints.apply(&batch.checkpoints, &batch.forgotten);
        commit(&checkpoint_file, &checkpoints)?;
    }
    tracing::info!(stats = ?collector.stats(), "Stopped.");
    Ok(())
}

/// Parses sizes like `10GiB`, `500MB`, `1024`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 10GiB or 500MB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "ti" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?}; use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn print_batch(out: &mut impl Write, batch: &Batch) -> io::Result<()> {
    #[derive(serde::Serialize)]
    struct Printed<'a> {
        path: &'a str,
        line: std::borrow::Cow<'a, str>,
    }
    for line in batch.lines() {
        serde_json::to_writer(
            &mut *out,
            &Printed {
                path: line.source,
                line: String::from_utf8_lossy(line.bytes),
            },
        )?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn commit(file: &CheckpointFile, checkpoints: &CheckpointSet) -> anyhow::Result<()> {
    file.commit(checkpoints)
        .context("cannot save checkpoints; lines printed since the last save will be printed again after a restart")
}

fn spawn_signal_thread(on_signal: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "Shutting down.");
                on_signal();
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// A node has many log files and each open one costs a descriptor: use the
/// hard limit rather than the (often 1024) soft one.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(
            parse_size("10 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn flags_parse_and_env_names_are_kept() {
        let args = Args::try_parse_from([
            "monitoring-rs",
            "--log-collector",
            "DIRECTORY",
            "--root-path",
            "x",
        ])
        .unwrap();
        assert_eq!(args.log_collector, CollectorKind::Directory);
        assert_eq!(args.output, Output::Store);
        assert_eq!(args.retention_size, 10 << 30);
        use clap::CommandFactory;
        let command = Args::command();
        let envs: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        for env in ["LOG_COLLECTOR", "ROOT_PATH", "DATA_DIRECTORY", "LISTEN"] {
            assert!(envs.iter().any(|e| e == env), "{env} missing");
        }
    }
}
