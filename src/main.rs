//! The `monitoring-rs` daemon: its flags, the one conversion from flags to
//! a [`DaemonConfig`], and [`daemon::run`]. Everything else is in the library.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use clap::{Parser, ValueEnum};
use monitoring_rs::api::ApiConfig;
use monitoring_rs::api::auth::{AuthMode, AuthTtls};
use monitoring_rs::api::tls::TlsFiles;
use monitoring_rs::cluster::{ClientConfig, PeerTls};
use monitoring_rs::daemon::PeerConfig;
use monitoring_rs::daemon::{self, Collector, DaemonConfig, KubernetesSettings, Output};
use monitoring_rs::forward::{Endpoint, Format, LokiLabels, SinkConfig};
use monitoring_rs::log_collector::directory::{DirectoryConfig, ReadFrom};
use monitoring_rs::log_database::Config as StoreConfig;
use monitoring_rs::memory::MemoryLimit;
use monitoring_rs::shutdown::Shutdown;
use tracing_subscriber::EnvFilter;

/// Which collector feeds the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CollectorKind {
    /// Every file under --root-path, labelled with its path.
    Directory,
    /// Kubernetes container logs, labelled with their pod.
    Kubernetes,
}

/// How API requests are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AuthKind {
    /// Bearer tokens checked with the Kubernetes API (TokenReview), reads
    /// allowed per namespace by RBAC (SubjectAccessReview on pods/log).
    Kubernetes,
    /// No authentication: everyone who can connect reads everything.
    None,
}

/// Where collected lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutputKind {
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

    /// How API requests are authenticated: kubernetes (bearer tokens and
    /// RBAC, as kubectl logs) or none. Default: kubernetes with
    /// --log-collector kubernetes, none with the directory collector.
    #[arg(long, env = "AUTH", value_enum, ignore_case = true)]
    auth: Option<AuthKind>,

    /// Whether /metrics needs `get` on the non-resource URL /metrics
    /// (kubernetes) or is open (none); only with --auth kubernetes.
    #[arg(long, env = "METRICS_AUTH", value_enum, ignore_case = true, default_value_t = AuthKind::Kubernetes)]
    metrics_auth: AuthKind,

    /// Serve HTTPS with this PEM certificate chain (with
    /// --tls-private-key-file); re-read when the file changes.
    #[arg(long, env = "TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,

    /// The PEM private key of --tls-cert-file.
    #[arg(long, env = "TLS_PRIVATE_KEY_FILE")]
    tls_private_key_file: Option<PathBuf>,

    /// The other daemons, host:port comma-separated (without Kubernetes).
    #[arg(long, env = "PEERS", value_delimiter = ',')]
    peers: Vec<SocketAddr>,

    /// The DaemonSet's headless Service whose EndpointSlices name the other
    /// daemons, as namespace/name (e.g. monitoring-rs/monitoring-rs).
    #[arg(long, env = "PEER_SERVICE")]
    peer_service: Option<String>,

    /// How long one peer may take to answer before the answer goes
    /// without it (with a warning).
    #[arg(long, env = "PEER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    peer_timeout: Duration,

    /// Peers asked at once for one query.
    #[arg(long, env = "PEER_CONCURRENCY", default_value_t = 16)]
    peer_concurrency: usize,

    /// Most bytes the peers' answers to one query may add up to (e.g.
    /// 64MiB); a larger answer is refused with a message to narrow the query.
    #[arg(long, env = "MAX_PEER_RESPONSE_SIZE", default_value = "64MiB", value_parser = parse_size)]
    max_peer_response_size: u64,

    /// The PEM CA certificate that signs the peers' certificates (needed
    /// with --tls-cert-file and peers: they serve HTTPS too).
    #[arg(long, env = "PEER_CA_FILE")]
    peer_ca_file: Option<PathBuf>,

    /// The name the peers' certificates carry (default: the Service's
    /// DNS name, name.namespace.svc, with --peer-service; else the peer's
    /// IP address).
    #[arg(long, env = "PEER_SERVER_NAME")]
    peer_server_name: Option<String>,

    /// Forward every entry to this OpenTelemetry (OTLP/HTTP) endpoint;
    /// `/v1/logs` is appended, as the OpenTelemetry specification says.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,

    /// The full OTLP logs URL (used as it is; overrides --otlp-endpoint).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")]
    otlp_logs_endpoint: Option<String>,

    /// Headers for the OTLP endpoint, `key=value,key2=value2` (values
    /// percent-encoded), e.g. `Authorization=Basic%20...`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS")]
    otlp_headers: Option<String>,

    /// `gzip` or `none`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_COMPRESSION", default_value = "gzip")]
    otlp_compression: String,

    /// How long one OTLP request may take, milliseconds.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value_t = 10_000)]
    otlp_timeout: u64,

    /// A PEM CA for the OTLP endpoint's certificate (else the system's).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    otlp_certificate: Option<PathBuf>,

    /// Forward every entry to this Loki push URL
    /// (https://loki.example.com/loki/api/v1/push).
    #[arg(long, env = "LOKI_PUSH_URL")]
    loki_push_url: Option<String>,

    /// The Loki tenant (`X-Scope-OrgID`).
    #[arg(long, env = "LOKI_TENANT_ID")]
    loki_tenant_id: Option<String>,

    /// Basic auth for Loki, `user:password` (Grafana Cloud: the instance
    /// id and an access token).
    #[arg(long, env = "LOKI_BASIC_AUTH")]
    loki_basic_auth: Option<String>,

    /// A file holding a bearer token for Loki (read at start).
    #[arg(long, env = "LOKI_BEARER_TOKEN_FILE")]
    loki_bearer_token_file: Option<PathBuf>,

    /// Labels added to every stream sent to Loki, `cluster=prod,env=eu`.
    #[arg(long, env = "LOKI_LABELS")]
    loki_labels: Option<String>,

    /// Which labels are Loki stream labels (the others are sent as
    /// structured metadata); default: namespace, pod_name, pod,
    /// container_name, container, node_name, stream, service_name, path.
    #[arg(long, env = "LOKI_STREAM_LABELS", value_delimiter = ',')]
    loki_stream_labels: Vec<String>,

    /// A PEM CA for Loki's certificate (else the system's).
    #[arg(long, env = "LOKI_CA_FILE")]
    loki_ca_file: Option<PathBuf>,

    /// On a sink's first start, what to send: `now` (new entries only),
    /// a duration back (`7d`: back-fill a week), or a time (RFC 3339).
    #[arg(long, env = "FORWARD_FROM", default_value = "now")]
    forward_from: String,

    /// A batch is sent once its lines, plus 48 bytes an entry (about what
    /// an entry adds to a request besides its line), reach this size
    /// (e.g. 1MiB)…
    #[arg(long, env = "FORWARD_BATCH_SIZE", default_value = "1MiB", value_parser = parse_size)]
    forward_batch_size: u64,

    /// …or this long after its first entry.
    #[arg(long, env = "FORWARD_BATCH_WAIT", default_value = "1s", value_parser = humantime::parse_duration)]
    forward_batch_wait: Duration,

    /// How long a token's TokenReview answer is kept (the kubelet's default).
    #[arg(long, env = "AUTH_TOKEN_TTL", default_value = "2m", value_parser = humantime::parse_duration)]
    auth_token_ttl: Duration,

    /// How long an allowed SubjectAccessReview is kept (the kubelet's default).
    #[arg(long, env = "AUTH_ALLOWED_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    auth_allowed_ttl: Duration,

    /// How long a denied SubjectAccessReview is kept (the kubelet's default).
    #[arg(long, env = "AUTH_DENIED_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    auth_denied_ttl: Duration,

    /// Where collected lines go.
    #[arg(long, env = "OUTPUT", value_enum, ignore_case = true, default_value_t = OutputKind::Store)]
    output: OutputKind,

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

    /// Memory for remembering what filtered queries kept of each block, so
    /// a dashboard repeating `|= "error"` does not decompress the same
    /// blocks again (0 turns it off).
    #[arg(long, env = "QUERY_CACHE_SIZE", default_value = "8MiB", value_parser = parse_size)]
    query_cache_size: u64,

    /// The daemon's memory ceiling (e.g. 256MiB; default: the container's
    /// cgroup limit, if any). Near it, collection slows and queries get 503.
    #[arg(long, env = "MEMORY_LIMIT", value_parser = parse_size)]
    memory_limit: Option<u64>,

    /// Most HTTP connections open at once (more wait to be accepted).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,

    /// A client must send a request's headers within this, or its
    /// connection is closed (slow or idle clients).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,

    /// Most follow requests and tail websockets at once (more get 429).
    #[arg(long, env = "MAX_TAILS", default_value_t = 100)]
    max_tails: usize,

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
    monitoring_rs::memory::bound_allocator_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .init();
    match run(Args::parse()) {
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

fn run(args: Args) -> anyhow::Result<()> {
    raise_open_file_limit();
    let config = daemon_config(args)?;
    tracing::info!(root = %config.directory.root.display(), output = ?config.output, "Starting.");
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("cannot install the SIGTERM and SIGINT handlers")?;
    daemon::run(config, shutdown)?;
    Ok(())
}

/// The one conversion from flags to the daemon's configuration.
fn daemon_config(args: Args) -> anyhow::Result<DaemonConfig> {
    let sinks = sinks(&args)?;
    let auth = match args.auth.unwrap_or(match args.log_collector {
        CollectorKind::Kubernetes => AuthKind::Kubernetes,
        CollectorKind::Directory => AuthKind::None,
    }) {
        AuthKind::Kubernetes => AuthMode::Kubernetes,
        AuthKind::None => AuthMode::None,
    };
    let auth_kubeconfig = args.kubeconfig.clone();
    let peers = match (&args.peer_service, args.peers.is_empty()) {
        (Some(_), false) => bail!("--peers and --peer-service are alternatives: give one"),
        (Some(service), true) => {
            let Some((namespace, name)) = service.split_once('/') else {
                bail!(
                    "--peer-service {service:?}: write namespace/name, e.g. monitoring-rs/monitoring-rs"
                );
            };
            PeerConfig::Service {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                own_node: args.node_name.clone(),
            }
        }
        (None, false) => PeerConfig::Fixed(args.peers.clone()),
        (None, true) => PeerConfig::None,
    };
    let tls = match (
        args.tls_cert_file.clone(),
        args.tls_private_key_file.clone(),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        _ => bail!("--tls-cert-file and --tls-private-key-file go together: give both or neither"),
    };
    let peer_tls = match (&tls, &peers, args.peer_ca_file.clone()) {
        (_, PeerConfig::None, _) | (None, _, None) => None,
        (Some(_), _, None) => bail!(
            "this daemon serves HTTPS (--tls-cert-file), so its peers do too: give --peer-ca-file, the CA that signs their certificates"
        ),
        (_, peers, Some(ca_file)) => Some(PeerTls {
            ca_file,
            server_name: args.peer_server_name.clone().or(match peers {
                PeerConfig::Service {
                    namespace, name, ..
                } => Some(format!("{name}.{namespace}.svc")),
                _ => None,
            }),
        }),
    };
    let peer_client = ClientConfig {
        timeout: args.peer_timeout,
        concurrency: args.peer_concurrency.max(1),
        max_response_bytes: usize::try_from(args.max_peer_response_size).unwrap_or(usize::MAX),
        tls: peer_tls,
    };
    if tls.is_none() && auth == AuthMode::Kubernetes && !args.listen.ip().is_loopback() {
        tracing::warn!(address = %args.listen, "Bearer tokens will cross the network in plain HTTP: give --tls-cert-file and --tls-private-key-file.");
    }
    let root = match (args.log_collector, args.root_path) {
        (_, Some(root)) => root,
        (CollectorKind::Directory, None) => {
            bail!("--root-path (ROOT_PATH) is required with --log-collector directory")
        }
        (CollectorKind::Kubernetes, None) => PathBuf::from("/var/log/containers"),
    };
    let collector = match args.log_collector {
        CollectorKind::Directory => Collector::Directory,
        CollectorKind::Kubernetes => Collector::Kubernetes(KubernetesSettings {
            node_name: args.node_name,
            kubeconfig: args.kubeconfig,
            include_labels: args.include_pod_labels,
            exclude_labels: args.exclude_pod_labels,
            include_annotations: args.include_pod_annotations,
            pod_wait: args.pod_wait,
            deleted_pod_grace: args.deleted_pod_grace,
        }),
    };
    let output = match (args.output, collector) {
        (OutputKind::Store, collector) => Output::Store(collector),
        (OutputKind::Stdout, Collector::Directory) => Output::Stdout,
        (OutputKind::Stdout, Collector::Kubernetes(_)) => bail!(
            "--output stdout works with --log-collector directory; the Kubernetes collector writes to the store"
        ),
    };
    let memory = MemoryLimit::detect(args.memory_limit);
    let mut store = StoreConfig {
        retention_period: args.retention_period,
        retention_size: args.retention_size,
        query_cache_bytes: usize::try_from(args.query_cache_size).unwrap_or(usize::MAX),
        ..StoreConfig::default()
    };
    if let Some(limit) = memory.limit {
        // Entries waiting for a flush get an eighth of the ceiling at most.
        let cap = |v: usize, share: u64| v.min((limit / share).max(2 << 20) as usize);
        store.max_head_bytes = cap(store.max_head_bytes, 8);
        store.flush_bytes = cap(store.flush_bytes, 32);
        store.query_cache_bytes = cap(store.query_cache_bytes, 32);
        tracing::info!(limit, "Memory limit in force.");
    }
    Ok(DaemonConfig {
        directory: DirectoryConfig {
            read_from: args.read_from,
            max_line_bytes: args.max_line_bytes as usize,
            rotate_wait: args.rotate_wait,
            batch_wait: args.batch_wait,
            ..DirectoryConfig::new(root)
        },
        output,
        data_directory: args.data_directory,
        store,
        flush_interval: args.flush_interval,
        listen: args.listen,
        api: ApiConfig {
            max_limit: args.max_limit,
            max_range: args.max_query_range,
            query_timeout: args.query_timeout,
            max_connections: args.max_connections,
            header_read_timeout: args.header_read_timeout,
            max_tails: args.max_tails,
            metrics_auth: args.metrics_auth == AuthKind::Kubernetes,
            tls,
            ..ApiConfig::default()
        },
        auth,
        auth_kubeconfig,
        peers,
        peer_client,
        sinks,
        auth_ttls: AuthTtls {
            token: args.auth_token_ttl,
            allowed: args.auth_allowed_ttl,
            denied: args.auth_denied_ttl,
        },
        memory,
    })
}

/// The forwarding sinks the flags ask for.
fn sinks(args: &Args) -> anyhow::Result<Vec<SinkConfig>> {
    let from = match args.forward_from.trim() {
        "now" | "" => monitoring_rs::log_database::now_ns(),
        text => match humantime::parse_duration(text) {
            Ok(back) => monitoring_rs::log_database::now_ns() - back.as_nanos() as i64,
            Err(_) => monitoring_rs::api::params::parse_time("--forward-from", text)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?,
        },
    };
    let mut out = Vec::new();
    let url = match (&args.otlp_logs_endpoint, &args.otlp_endpoint) {
        (Some(full), _) => Some(full.clone()),
        (None, Some(base)) => Some(format!("{}/v1/logs", base.trim_end_matches('/'))),
        (None, None) => None,
    };
    if let Some(url) = url {
        let gzip = match args.otlp_compression.trim().to_ascii_lowercase().as_str() {
            "gzip" => true,
            "none" | "" => false,
            other => bail!("OTEL_EXPORTER_OTLP_COMPRESSION={other:?}: use gzip or none"),
        };
        out.push(SinkConfig {
            name: "otlp".into(),
            format: Format::Otlp { gzip },
            endpoint: Endpoint {
                url: url
                    .parse()
                    .with_context(|| format!("the OTLP endpoint {url:?} is not a URL"))?,
                headers: otlp_headers(args.otlp_headers.as_deref().unwrap_or(""))?,
                timeout: Duration::from_millis(args.otlp_timeout.max(1)),
                ca_file: args.otlp_certificate.clone(),
            },
            batch_bytes: args.forward_batch_size as usize,
            batch_wait: args.forward_batch_wait,
            from,
        });
    }
    if let Some(url) = &args.loki_push_url {
        let mut headers = Vec::new();
        if let Some(tenant) = &args.loki_tenant_id {
            headers.push((
                HeaderName::from_static("x-scope-orgid"),
                header_value(tenant)?,
            ));
        }
        if let Some(user_password) = &args.loki_basic_auth {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(user_password);
            headers.push((AUTHORIZATION, header_value(&format!("Basic {encoded}"))?));
        }
        if let Some(file) = &args.loki_bearer_token_file {
            let token = std::fs::read_to_string(file).with_context(|| {
                format!("cannot read --loki-bearer-token-file {}", file.display())
            })?;
            headers.push((
                AUTHORIZATION,
                header_value(&format!("Bearer {}", token.trim()))?,
            ));
        }
        let mut labels = LokiLabels::default();
        if !args.loki_stream_labels.is_empty() {
            labels.stream = args
                .loki_stream_labels
                .iter()
                .map(|s| s.trim().to_owned())
                .collect();
        }
        for pair in args
            .loki_labels
            .iter()
            .flat_map(|l| l.split(','))
            .filter(|p| !p.trim().is_empty())
        {
            let Some((name, value)) = pair.split_once('=') else {
                bail!("--loki-labels {pair:?}: write name=value, e.g. cluster=prod");
            };
            labels
                .extra
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
        out.push(SinkConfig {
            name: "loki".into(),
            format: Format::Loki(labels),
            endpoint: Endpoint {
                url: url
                    .parse()
                    .with_context(|| format!("--loki-push-url {url:?} is not a URL"))?,
                headers,
                timeout: Duration::from_secs(10),
                ca_file: args.loki_ca_file.clone(),
            },
            batch_bytes: args.forward_batch_size as usize,
            batch_wait: args.forward_batch_wait,
            from,
        });
    }
    Ok(out)
}

fn header_value(text: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(text).context("a header value may not hold control characters")
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs, comma-separated,
/// values percent-encoded (the W3C baggage form the specification uses).
fn otlp_headers(text: &str) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    let mut out = Vec::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("OTEL_EXPORTER_OTLP_HEADERS: {pair:?} is not key=value");
        };
        let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
        let name = HeaderName::from_bytes(key.trim().as_bytes())
            .with_context(|| format!("OTEL_EXPORTER_OTLP_HEADERS: {key:?} is not a header name"))?;
        out.push((name, header_value(&value)?));
    }
    Ok(out)
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
        assert_eq!(args.output, OutputKind::Store);
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
