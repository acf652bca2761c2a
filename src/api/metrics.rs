//! `/metrics` in Prometheus (OpenMetrics) text: what the collector, the
//! store and the API did. Collector and store figures are read at scrape
//! time; request counts and latencies are recorded as requests finish.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;

type LabelPairs = Vec<(String, String)>;
type HistogramFamily = Family<LabelPairs, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms … 8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// Totals that only grow, exported as counters by adding what is new.
#[derive(Default)]
struct Totals {
    seen: std::collections::HashMap<&'static str, u64>,
    /// The same, for `lines_without_pod_metadata` by reason.
    reasons: std::collections::HashMap<&'static str, u64>,
}

/// Every metric.
pub struct Metrics {
    registry: Registry,
    requests: Family<LabelPairs, Counter>,
    latency: HistogramFamily,
    tails: Gauge,
    connections: Gauge,
    panics: Counter,
    refused: Family<LabelPairs, Counter>,
    denied: Family<LabelPairs, Counter>,
    without_metadata: Family<LabelPairs, Counter>,
    peer_requests: Family<LabelPairs, Counter>,
    peer_latency: HistogramFamily,
    /// Per sink and figure: `forward_*_total` counters.
    forward: Vec<(&'static str, Family<LabelPairs, Counter>)>,
    forward_lag: Family<LabelPairs, Gauge<f64, AtomicU64>>,
    forward_lag_entries: Family<LabelPairs, Gauge>,
    counters: Vec<(&'static str, Counter)>,
    gauges: Vec<(&'static str, Gauge)>,
    checkpoint_age: Gauge<f64, AtomicU64>,
    totals: Mutex<Totals>,
}

const COUNTERS: &[(&str, &str)] = &[
    (
        "malformed_lines",
        "Container log lines in neither CRI nor Docker format (stored as they are).",
    ),
    (
        "truncated_lines",
        "Lines the runtime split whose pieces exceeded --max-line-bytes (stored cut).",
    ),
    (
        "unrecognised_files",
        "Files under the root that are not container logs (skipped).",
    ),
    (
        "lines_ingested",
        "Lines read from log files and handed to the store.",
    ),
    ("bytes_ingested", "Line bytes read from log files."),
    (
        "lines_split",
        "Pieces emitted because a line exceeded --max-line-bytes.",
    ),
    (
        "files_rotated",
        "Files that left the root (rotated away or deleted) and were drained.",
    ),
    (
        "file_truncations",
        "Files truncated or rewritten (copytruncate).",
    ),
    (
        "watch_overflows",
        "File event queue overflows answered with a rescan.",
    ),
    ("read_errors", "Errors reading log files (retried)."),
    (
        "store_flushes",
        "Flushes that made entries and checkpoints durable (fsynced).",
    ),
    (
        "store_flush_errors",
        "Failed flushes; entries stay in memory and are retried.",
    ),
    (
        "store_corrupt_blocks",
        "Blocks that failed their checksum when read and were skipped.",
    ),
    (
        "store_partitions_dropped",
        "Hourly partitions deleted by retention.",
    ),
    (
        "store_query_cache_hits",
        "Blocks a filtered query did not read: what its filters keep of them was remembered.",
    ),
    (
        "store_query_cache_misses",
        "Blocks a filtered query had to read.",
    ),
];

const GAUGES: &[(&str, &str)] = &[
    (
        "memory_limit_bytes",
        "The memory ceiling (--memory-limit or the cgroup's); 0 if none.",
    ),
    ("resident_memory_bytes", "Resident memory of the daemon."),
    (
        "pending_piece_bytes",
        "Bytes of split container log lines waiting for their end.",
    ),
    (
        "waiting_for_metadata_bytes",
        "Bytes of entries held for their pod's metadata.",
    ),
    ("files_watched", "Log files open for reading."),
    (
        "collector_lag_bytes",
        "Bytes written to log files but not yet read.",
    ),
    ("store_streams", "Streams in the store."),
    ("store_chunks", "Compressed blocks on disk."),
    ("store_entries", "Entries in the store."),
    (
        "store_raw_bytes",
        "Line bytes in the store, before compression.",
    ),
    ("store_stored_bytes", "Bytes of blocks on disk."),
    (
        "store_memory_bytes",
        "Bytes of entries in memory not yet flushed.",
    ),
    (
        "store_query_cache_bytes",
        "Memory held by what filtered queries kept of blocks (--query-cache-size at most).",
    ),
];

impl Metrics {
    /// A registry with every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("monitoring_rs");
        let requests = Family::<LabelPairs, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status.",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route.",
            latency.clone(),
        );
        let tails = Gauge::default();
        registry.register(
            "tail_subscribers",
            "Open follow requests and tail websockets.",
            tails.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "http_connections_open",
            "Open HTTP connections (at most --max-connections).",
            connections.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "http_handler_panics",
            "Requests answered 500 because their handler panicked (a bug).",
            panics.clone(),
        );
        let refused = Family::<LabelPairs, Counter>::default();
        registry.register(
            "http_requests_refused",
            "Requests refused to protect the daemon, by reason.",
            refused.clone(),
        );
        let denied = Family::<LabelPairs, Counter>::default();
        registry.register(
            "http_requests_denied",
            "Requests denied by access control, by reason: no_token, invalid_token, api_unavailable, namespace_forbidden, metrics_forbidden.",
            denied.clone(),
        );
        let without_metadata = Family::<LabelPairs, Counter>::default();
        registry.register(
            "lines_without_pod_metadata",
            "Lines stored with their file name's labels only, by reason: api_unavailable (no pod list from the API server), pod_unknown (the API server does not know the pod).",
            without_metadata.clone(),
        );
        let peer_requests = Family::<LabelPairs, Counter>::default();
        registry.register(
            "peer_requests",
            "Requests to other daemons for cluster-wide answers, by peer and outcome: ok, refused (the peer answered 4xx), error (5xx or a broken answer), unreachable, timeout, too_large.",
            peer_requests.clone(),
        );
        let peer_latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "peer_request_duration_seconds",
            "How long other daemons took to answer, by peer.",
            peer_latency.clone(),
        );
        let forward = [
            (
                "forward_sent_entries",
                "Entries a sink's receiver took, by sink.",
            ),
            (
                "forward_sent_bytes",
                "Request bytes (compressed) a sink's receiver took, by sink.",
            ),
            (
                "forward_retries",
                "Deliveries tried again (receiver down, 429, 5xx), by sink.",
            ),
            (
                "forward_rejected_entries",
                "Entries a receiver refused for good (4xx) and that were dropped, by sink.",
            ),
            (
                "forward_lost_entries",
                "Entries retention deleted before a sink sent them (it lagged past retention), by sink.",
            ),
        ]
        .into_iter()
        .map(|(name, help)| {
            let family = Family::<LabelPairs, Counter>::default();
            registry.register(name, help, family.clone());
            (name, family)
        })
        .collect();
        let forward_lag = Family::<LabelPairs, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "forward_lag_seconds",
            "How far a sink is behind the newest stored entry (0: it follows live writes), by sink.",
            forward_lag.clone(),
        );
        let forward_lag_entries = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "forward_lag_entries",
            "Stored entries a sink has not delivered yet, by sink.",
            forward_lag_entries.clone(),
        );
        let counters = COUNTERS
            .iter()
            .map(|(name, help)| {
                let c = Counter::default();
                registry.register(*name, *help, c.clone());
                (*name, c)
            })
            .collect();
        let gauges = GAUGES
            .iter()
            .map(|(name, help)| {
                let g = Gauge::default();
                registry.register(*name, *help, g.clone());
                (*name, g)
            })
            .collect();
        let checkpoint_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "checkpoint_age_seconds",
            "Seconds since lines and checkpoints were last handed to the store.",
            checkpoint_age.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            tails,
            connections,
            panics,
            refused,
            denied,
            without_metadata,
            peer_requests,
            peer_latency,
            forward,
            forward_lag,
            forward_lag_entries,
            counters,
            gauges,
            checkpoint_age,
            totals: Mutex::default(),
        }
    }

    /// Records one finished request.
    pub fn observe_request(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&vec![
                ("route".into(), route.into()),
                ("status".into(), status.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("route".into(), route.into())])
            .observe(took.as_secs_f64());
    }

    pub(super) fn connection_opened(&self) {
        self.connections.inc();
    }

    pub(super) fn connection_closed(&self) {
        self.connections.dec();
    }

    pub(super) fn handler_panicked(&self) {
        self.panics.inc();
    }

    /// Counts a request refused to protect the daemon (`reason`: what limit).
    pub(super) fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// Counts a request denied by access control.
    pub(crate) fn denied(&self, reason: &str) {
        self.denied
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// Records one request to a peer.
    pub(crate) fn observe_peer(&self, peer: &str, outcome: &str, took: Duration) {
        self.peer_requests
            .get_or_create(&vec![
                ("peer".into(), peer.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
        self.peer_latency
            .get_or_create(&vec![("peer".into(), peer.into())])
            .observe(took.as_secs_f64());
    }

    pub(super) fn tail_started(&self) {
        self.tails.inc();
    }

    pub(super) fn tail_ended(&self) {
        self.tails.dec();
    }

    fn set_total(&self, totals: &mut Totals, name: &'static str, value: u64) {
        let seen = totals.seen.entry(name).or_insert(0);
        if value > *seen
            && let Some((_, c)) = self.counters.iter().find(|(n, _)| *n == name)
        {
            c.inc_by(value - *seen);
            *seen = value;
        }
    }

    fn set_gauge(&self, name: &str, value: u64) {
        if let Some((_, g)) = self.gauges.iter().find(|(n, _)| *n == name) {
            g.set(value as i64);
        }
    }

    /// Reads the collector's and store's figures into the metrics.
    fn refresh(&self, state: &AppState) {
        let status = state.collector.report();
        let store = state.db.stats();
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let c = &status.counters;
        for (name, value) in [
            ("lines_ingested", c.lines),
            ("bytes_ingested", c.bytes),
            ("lines_split", c.lines_split),
            ("files_rotated", c.files_rotated),
            ("file_truncations", c.truncations),
            ("watch_overflows", c.overflows),
            ("read_errors", c.read_errors),
            ("store_flushes", store.flushes),
            ("store_flush_errors", store.flush_errors),
            ("store_corrupt_blocks", store.corrupt_blocks),
            ("store_partitions_dropped", store.partitions_dropped),
            ("store_query_cache_hits", store.query_cache_hits),
            ("store_query_cache_misses", store.query_cache_misses),
        ] {
            self.set_total(&mut totals, name, value);
        }
        if let Some(k) = &status.kubernetes {
            self.set_gauge("pending_piece_bytes", k.pending_piece_bytes);
            self.set_gauge("waiting_for_metadata_bytes", k.waiting_bytes);
            for (name, value) in [
                ("malformed_lines", k.malformed_lines),
                ("truncated_lines", k.truncated_lines),
                ("unrecognised_files", k.unrecognised_files),
            ] {
                self.set_total(&mut totals, name, value);
            }
            for (reason, value) in [
                ("api_unavailable", k.without_metadata_api_unavailable),
                ("pod_unknown", k.without_metadata_pod_unknown),
            ] {
                let seen = totals.reasons.entry(reason).or_insert(0);
                if value > *seen {
                    self.without_metadata
                        .get_or_create(&vec![("reason".into(), reason.into())])
                        .inc_by(value - *seen);
                    *seen = value;
                }
            }
        }
        for (name, value) in [
            ("files_watched", status.files_watched),
            ("collector_lag_bytes", status.lag_bytes),
            ("store_streams", store.streams),
            ("store_chunks", store.chunks),
            ("store_entries", store.entries),
            ("store_raw_bytes", store.raw_bytes),
            ("store_stored_bytes", store.stored_bytes),
            ("store_memory_bytes", store.head_bytes),
            ("store_query_cache_bytes", store.query_cache_bytes),
            ("memory_limit_bytes", state.memory.limit.unwrap_or(0)),
            ("resident_memory_bytes", crate::memory::resident_bytes()),
        ] {
            self.set_gauge(name, value);
        }
        for sink in &state.sinks {
            use std::sync::atomic::Ordering::Relaxed;
            let labels = vec![("sink".to_owned(), sink.name.clone())];
            for (name, value) in [
                ("forward_sent_entries", sink.sent_entries.load(Relaxed)),
                ("forward_sent_bytes", sink.sent_bytes.load(Relaxed)),
                ("forward_retries", sink.retries.load(Relaxed)),
                (
                    "forward_rejected_entries",
                    sink.rejected_entries.load(Relaxed),
                ),
                ("forward_lost_entries", sink.lost_entries.load(Relaxed)),
            ] {
                if let Some((_, family)) = self.forward.iter().find(|(n, _)| *n == name) {
                    let counter = family.get_or_create(&labels);
                    let seen = counter.get();
                    if value > seen {
                        counter.inc_by(value - seen);
                    }
                }
            }
            self.forward_lag
                .get_or_create(&labels)
                .set(sink.lag_seconds(store.newest));
            self.forward_lag_entries
                .get_or_create(&labels)
                .set(i64::try_from(sink.lag_entries()).unwrap_or(i64::MAX));
        }
        if let Some(t) = status.last_checkpoint {
            self.checkpoint_age
                .set((crate::log_database::now_ns() - t) as f64 / 1e9);
        }
    }
}

impl Metrics {
    /// The registry in Prometheus text.
    pub(super) fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /metrics`
pub(super) async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.refresh(&state);
    let text = state.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
