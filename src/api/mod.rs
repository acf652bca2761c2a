//! The HTTP API: curl-friendly routes, LogQL, live tail, the Loki read API
//! and `/metrics`. It holds no log data; every answer comes from the store.
//!
//! Queries run on the blocking pool with a deadline, and stop when the
//! client goes away (the request future is dropped, which flips a flag the
//! query checks). Client mistakes answer 4xx with a message saying what to
//! fix.

pub mod auth;
pub mod cluster;
mod fanin;
mod logs;
mod loki;
pub mod metrics;
pub mod params;
mod server;
mod tail;
pub mod tls;
mod web;

pub use server::serve;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::log_collector::status::{CollectorReport, CollectorStatus};
use crate::log_database::labels::Labels;
use crate::log_database::{Database, StoreError, TimeRange};
use crate::logql::LogExpr;
use crate::logql::metric::{Budget, EvalError};
use crate::memory::{MemoryLimit, Pressure};
use crate::shutdown::Shutdown;

/// Limits of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest `limit` a query may ask for.
    pub max_limit: usize,
    /// Longest time range a query may cover.
    pub max_range: Duration,
    /// How long a query may run.
    pub query_timeout: Duration,
    /// Most series a metric query may produce.
    pub max_series: usize,
    /// Most HTTP connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// A client must send a request's headers within this, or its
    /// connection is closed (slow or idle clients).
    pub header_read_timeout: Duration,
    /// Most follow requests and tail websockets at once; more get 429.
    pub max_tails: usize,
    /// `/metrics` needs `get` on `/metrics` (with a reviewer).
    pub metrics_auth: bool,
    /// Serve HTTPS with these files.
    pub tls: Option<tls::TlsFiles>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_limit: 5000,
            max_range: Duration::from_secs(31 * 24 * 3600),
            query_timeout: Duration::from_secs(30),
            max_series: 500,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_tails: 100,
            metrics_auth: true,
            tls: None,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub db: Arc<Database>,
    /// Limits.
    pub config: ApiConfig,
    /// The collector's figures.
    pub collector: Arc<dyn CollectorStatus>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The daemon's shutdown: ends follows and tails.
    pub shutdown: Shutdown,
    /// Queries running at once: each decodes blocks into memory, so more
    /// than a few only adds memory and contention, not throughput.
    pub running: Arc<tokio::sync::Semaphore>,
    /// Slots for follow requests and tail websockets (`max_tails`).
    pub tails: Arc<tokio::sync::Semaphore>,
    /// The daemon's memory ceiling: queries are refused near it.
    pub memory: MemoryLimit,
    /// Checks tokens and permissions (`--auth kubernetes`); `None`: open.
    pub reviewer: Option<Arc<auth::Reviewer>>,
    /// The other daemons of the cluster.
    pub peers: crate::cluster::Peers,
    /// How to ask them.
    pub peer_client: Arc<crate::cluster::Client>,
    /// The forwarding sinks' figures.
    pub sinks: Vec<Arc<crate::forward::SinkStatus>>,
}

/// Queries that may run at once (the rest wait their turn).
const CONCURRENT_QUERIES: usize = 4;

impl AppState {
    /// State over `db` with default limits, a blank collector status and no
    /// shutdown signal (for tests and tools).
    pub fn new(db: Arc<Database>) -> Self {
        Self::with_config(db, ApiConfig::default())
    }

    /// State over `db` with the limits of `config`.
    pub fn with_config(db: Arc<Database>, config: ApiConfig) -> Self {
        Self {
            db,
            tails: Arc::new(tokio::sync::Semaphore::new(config.max_tails)),
            config,
            collector: Arc::new(RwLock::new(CollectorReport::default())),
            metrics: Arc::new(metrics::Metrics::new()),
            shutdown: Shutdown::new(),
            running: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_QUERIES)),
            memory: MemoryLimit::default(),
            reviewer: None,
            peers: crate::cluster::Peers::default(),
            sinks: Vec::new(),
            peer_client: Arc::new(
                crate::cluster::Client::new(crate::cluster::ClientConfig::default())
                    .expect("a client without TLS files always builds"),
            ),
        }
    }
}

/// An error answer: a status and a message for the person who sent the request.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl ApiError {
    /// 400 with `message`.
    pub fn bad_request(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Plain text, as Loki answers errors; Grafana and curl both show it.
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Query(e) => Self::bad_request(e.to_string()),
            other => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: other.to_string(),
            },
        }
    }
}

impl From<EvalError> for ApiError {
    fn from(error: EvalError) -> Self {
        let status = match &error {
            EvalError::Store(StoreError::Query(_))
            | EvalError::TooManySeries(_)
            | EvalError::Pipeline { .. }
            | EvalError::Invalid(_) => StatusCode::BAD_REQUEST,
            EvalError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            EvalError::OutOfMemory => StatusCode::SERVICE_UNAVAILABLE,
            // The client is gone; nobody reads this.
            EvalError::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            EvalError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: error.to_string(),
        }
    }
}

impl From<crate::log_database::query::QueryError> for ApiError {
    fn from(error: crate::log_database::query::QueryError) -> Self {
        Self::bad_request(error.to_string())
    }
}

impl From<crate::logql::ParseError> for ApiError {
    fn from(error: crate::logql::ParseError) -> Self {
        Self::bad_request(error.to_string())
    }
}

/// Flips a query's cancel flag when the request is dropped (client gone).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl AppState {
    /// Runs `work` on the blocking pool with this API's deadline; the work is
    /// told to stop if the request goes away.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Budget) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.refuse_near_memory_limit()?;
        let _permit = self.running.acquire().await.map_err(|_| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down".into(),
        })?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancelled.clone());
        let budget = self.budget(cancelled);
        tokio::task::spawn_blocking(move || work(budget))
            .await
            .map_err(|e| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("query failed: {e}"),
            })?
    }

    /// Runs `work` as [`blocking`](Self::blocking) does, or at once when
    /// `inline`: a peer's question that no stream here can match costs
    /// an index lookup, not a turn among the queries.
    async fn run<T: Send + 'static>(
        &self,
        inline: bool,
        work: impl FnOnce(Budget) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        if inline {
            return work(self.budget(Arc::new(AtomicBool::new(false))));
        }
        self.blocking(work).await
    }

    /// Whether no stream here can match any of `selectors` (nothing to read).
    fn matches_nothing<'a>(
        &self,
        selectors: impl IntoIterator<Item = &'a [crate::log_database::query::Matcher]>,
    ) -> bool {
        selectors.into_iter().all(|selector| {
            self.db
                .series(selector, TimeRange::ALL)
                .is_ok_and(|s| s.is_empty())
        })
    }

    fn refuse_near_memory_limit(&self) -> Result<(), ApiError> {
        if self.memory.pressure() >= Pressure::High {
            self.metrics.refused("memory");
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the daemon is near its memory limit (--memory-limit) and takes no new queries for now; try again in a few seconds".into(),
            });
        }
        Ok(())
    }

    fn budget(&self, cancelled: Arc<AtomicBool>) -> Budget {
        Budget {
            deadline: Instant::now() + self.config.query_timeout,
            cancelled,
            max_series: self.config.max_series,
            memory: self.memory,
        }
    }

    fn check_limit(&self, limit: usize) -> Result<usize, ApiError> {
        if limit > self.config.max_limit {
            return Err(ApiError::bad_request(format!(
                "limit={limit} is over the maximum of {}; ask for fewer lines or narrow the range",
                self.config.max_limit
            )));
        }
        Ok(limit)
    }

    /// Refuses a range longer than `--max-query-range`, counted from the
    /// oldest entry held: `start=0` asks for everything there is.
    fn check_range(&self, range: TimeRange) -> Result<(), ApiError> {
        let max = self.config.max_range.as_nanos() as i64;
        // Most ranges are short: only a long one pays for finding the
        // oldest entry (a walk over every stream's blocks and heads).
        if range.last().saturating_sub(range.start) <= max {
            return Ok(());
        }
        let start = match self.db.oldest() {
            Some(oldest) => range.start.max(oldest),
            None => return Ok(()),
        };
        let span = range.last().saturating_sub(start);
        if span > max {
            return Err(ApiError::bad_request(format!(
                "the time range ({}) is longer than the maximum of {}; narrow it",
                humantime::format_duration(Duration::from_secs((span / 1_000_000_000) as u64)),
                humantime::format_duration(self.config.max_range)
            )));
        }
        Ok(())
    }
}

/// One log entry of a result: its labels (the stream's, its structured
/// metadata and what the pipeline made), timestamp, line, and the stream's
/// own labels.
pub(crate) type Row = (Arc<Labels>, i64, Vec<u8>, Arc<Labels>);

/// Runs a log query: the store does the selector, range and leading line
/// filters; the rest of the pipeline runs here, until `limit` entries.
pub(crate) fn run_log_query(
    db: &Database,
    log: &LogExpr,
    range: TimeRange,
    direction: crate::log_database::query::Direction,
    limit: usize,
    budget: &Budget,
) -> Result<Vec<Row>, ApiError> {
    let (mut query, pipeline) = log.plan(range.start, range.end, direction);
    if pipeline.is_empty() {
        query.limit = limit;
    }
    let mut rows = Vec::new();
    for (n, entry) in db.query(query)?.enumerate() {
        if rows.len() >= limit {
            break;
        }
        if n % 4096 == 0 {
            budget.check()?;
        }
        if let Some(out) =
            pipeline.process(&entry.labels, entry.timestamp, &entry.line, entry.level)
        {
            rows.push((
                out.labels,
                entry.timestamp,
                out.line.into_owned(),
                out.stream,
            ));
        }
    }
    Ok(rows)
}

async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .observe_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// Every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(web::page))
        .route("/ui/{file}", get(web::file))
        .route("/ready", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics::handler))
        .route("/status", get(logs::status))
        .route("/logs/{key}/{*value}", get(logs::logs))
        .route("/query", get(loki::query_range))
        .route("/loki/api/v1/query", get(loki::query).post(loki::query))
        .route(
            "/loki/api/v1/query_range",
            get(loki::query_range).post(loki::query_range),
        )
        .route("/loki/api/v1/labels", get(loki::labels).post(loki::labels))
        .route("/loki/api/v1/label/{name}/values", get(loki::label_values))
        .route("/loki/api/v1/series", get(loki::series).post(loki::series))
        .route(
            "/loki/api/v1/index/stats",
            get(loki::index_stats).post(loki::index_stats),
        )
        .route(
            "/loki/api/v1/index/volume",
            get(loki::volume).post(loki::volume),
        )
        .route(
            "/loki/api/v1/index/volume_range",
            get(loki::volume_range).post(loki::volume_range),
        )
        .route("/loki/api/v1/status/buildinfo", get(loki::buildinfo))
        .route(
            "/loki/api/v1/detected_labels",
            get(loki::drilldown::detected_labels).post(loki::drilldown::detected_labels),
        )
        .route(
            "/loki/api/v1/detected_fields",
            get(loki::drilldown::detected_fields).post(loki::drilldown::detected_fields),
        )
        .route(
            "/loki/api/v1/drilldown-limits",
            get(loki::drilldown::limits),
        )
        .route(
            "/loki/api/v1/patterns",
            get(loki::patterns::patterns).post(loki::patterns::patterns),
        )
        .route(
            "/loki/api/v1/detected_field/{name}/values",
            get(loki::drilldown::detected_field_values),
        )
        .route("/loki/api/v1/tail", get(tail::websocket))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such route; see the README for the API".into(),
            }
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::middleware,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(state)
}
