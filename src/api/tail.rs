//! Live tails: `/logs/...?follow=true` (chunked ndjson or text) and Loki's
//! `/loki/api/v1/tail` websocket. Both receive every write from the store
//! as it happens; a subscriber that falls behind is told so and dropped, so
//! memory never grows with a slow client.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::json;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::cluster::Fanout;
use super::logs::Format;
use super::loki::shapes::TailFrame;
use super::params::{Params, QueryParams};
use super::{ApiError, AppState, Row, fanin, run_log_query};
use crate::log_database::query::{Direction, Query};
use crate::log_database::{Appended, TimeRange};
use crate::logql::pipeline::Pipeline;
use crate::logql::{Expr, LogExpr, parse};
use crate::shutdown::Shutdown;

/// Filters live writes through a log query.
struct Matcher {
    query: Query,
    pipeline: Pipeline,
}

impl Matcher {
    fn new(log: &LogExpr) -> Self {
        let (query, pipeline) = log.plan(i64::MIN, i64::MAX, Direction::Forward);
        Self { query, pipeline }
    }

    fn rows(&self, appended: &Appended) -> Vec<Row> {
        let mut rows = Vec::new();
        for stream in &appended.streams {
            let (labels, entries) = (stream.labels(), &stream.entries);
            if !self.query.selector.iter().all(|m| m.matches(labels)) {
                continue;
            }
            for i in 0..entries.len() {
                let (ts, line) = (entries.timestamps[i], entries.line(i));
                if !self.query.keeps(line) {
                    continue;
                }
                if let Some(out) = self.pipeline.process(labels, ts, line, entries.level(i)) {
                    rows.push((out.labels, ts, out.line.into_owned(), out.stream));
                }
            }
        }
        rows
    }
}

enum Next {
    Rows(Vec<Row>),
    Lagged(u64),
    End,
}

/// What a follower receives after its backfill: this store's matching
/// writes (less those the backfill already had) and the peers' batches.
pub(super) struct Live {
    receiver: Receiver<Arc<Appended>>,
    matcher: Matcher,
    seen: HashSet<Row>,
    shutdown: Shutdown,
    peers: Option<mpsc::Receiver<Vec<Row>>>,
}

impl Live {
    /// Writes to `receiver` matching `log`, without the rows of `initial`.
    pub(super) fn new(
        state: &AppState,
        log: &LogExpr,
        receiver: Receiver<Arc<Appended>>,
        initial: &[Row],
        peers: Option<mpsc::Receiver<Vec<Row>>>,
    ) -> Self {
        Self {
            receiver,
            matcher: Matcher::new(log),
            // Lines written while the initial query ran arrive live too.
            seen: initial.iter().cloned().collect(),
            shutdown: state.shutdown.clone(),
            peers,
        }
    }

    /// With the peers' batches beside this store's writes.
    pub(super) fn with_peers(self, peers: Option<mpsc::Receiver<Vec<Row>>>) -> Self {
        Self { peers, ..self }
    }

    async fn next(&mut self) -> Next {
        loop {
            if self.shutdown.is_triggered() {
                return Next::End;
            }
            let peers = async {
                match self.peers.as_mut() {
                    Some(peers) => peers.recv().await,
                    None => std::future::pending().await,
                }
            };
            let mut peers_ended = false;
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(appended) => {
                        let seen = &mut self.seen;
                        let rows: Vec<Row> = self
                            .matcher
                            .rows(&appended)
                            .into_iter()
                            .filter(|r| seen.is_empty() || !seen.remove(r))
                            .collect();
                        if !rows.is_empty() {
                            return Next::Rows(rows);
                        }
                    }
                    Err(RecvError::Lagged(n)) => return Next::Lagged(n),
                    Err(RecvError::Closed) => return Next::End,
                },
                batch = peers => match batch {
                    Some(rows) => return Next::Rows(rows),
                    None => peers_ended = true,
                },
                () = self.shutdown.wait() => return Next::End,
            }
            if peers_ended {
                self.peers = None;
            }
        }
    }

    /// The batches as a stream, ending when the follower falls behind.
    pub(super) fn batches(self) -> futures_util::stream::BoxStream<'static, Vec<Row>> {
        Box::pin(stream::unfold(self, |mut live| async move {
            match live.next().await {
                Next::Rows(rows) => Some((rows, live)),
                Next::Lagged(_) | Next::End => None,
            }
        }))
    }
}

/// The body of a `follow=true` response: `initial`, then new matching lines
/// until the client goes away, the server stops, or the client falls behind.
pub(super) fn follow_body(initial: Vec<Row>, format: Format, live: Live, guard: TailGuard) -> Body {
    let first: Vec<u8> = format.rows(&initial);
    let stream = stream::unfold(
        (Some(first), live, guard, false),
        move |(first, mut live, guard, done)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<Bytes, std::convert::Infallible>(Bytes::from(first)),
                    (None, live, guard, done),
                ));
            }
            if done {
                return None;
            }
            match live.next().await {
                Next::Rows(rows) => Some((
                    Ok(Bytes::from(format.rows(&rows))),
                    (None, live, guard, false),
                )),
                Next::Lagged(n) => {
                    let message = match format {
                        Format::Text => format!(
                            "[monitoring-rs] follow stopped: this client fell {n} writes behind\n"
                        ),
                        _ => format!(
                            "{}\n",
                            json!({"error": format!("follow stopped: this client fell {n} writes behind")})
                        ),
                    };
                    Some((Ok(Bytes::from(message)), (None, live, guard, true)))
                }
                Next::End => None,
            }
        },
    );
    Body::from_stream(stream)
}

/// A follow for the cluster: every peer's backfill merged with this
/// node's `initial` (rows in `direction`, then the newest or oldest
/// `limit`), and the peers' live batches beside this store's.
pub(super) async fn cluster_follow(
    state: &AppState,
    fanout: &Fanout,
    p: &Params,
    initial: Vec<Row>,
    direction: Direction,
    limit: usize,
) -> Result<
    (
        Vec<Row>,
        Option<mpsc::Receiver<Vec<Row>>>,
        Vec<crate::cluster::Missing>,
    ),
    ApiError,
> {
    let Some(feed) = fanin::follow_peers(state, fanout, p).await? else {
        return Ok((initial, None, Vec::new()));
    };
    let mut parts = vec![initial];
    parts.extend(feed.backfill);
    Ok((
        super::cluster::merge_rows(parts, direction, limit),
        Some(feed.live),
        feed.missing,
    ))
}

/// One of the `--max-tails` slots for a follow or tail, counted in
/// `/metrics` while it lives.
pub(super) struct TailGuard {
    metrics: Arc<super::metrics::Metrics>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl TailGuard {
    /// Takes a slot, or answers 429 when all are in use.
    pub(super) fn take(state: &AppState) -> Result<Self, ApiError> {
        let Ok(slot) = state.tails.clone().try_acquire_owned() else {
            state.metrics.refused("max_tails");
            return Err(ApiError {
                status: axum::http::StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "too many follow and tail clients at once (the limit is {}, --max-tails); try again later",
                    state.config.max_tails
                ),
            });
        };
        state.metrics.tail_started();
        Ok(Self {
            metrics: state.metrics.clone(),
            _slot: slot,
        })
    }
}

impl Drop for TailGuard {
    fn drop(&mut self) {
        self.metrics.tail_ended();
    }
}

/// `GET /loki/api/v1/tail` (websocket): Loki's tail protocol. Asked by a
/// peer, the peer form of a follow instead.
pub(super) async fn websocket(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<crate::api::auth::Access>,
    fanout: Fanout,
    QueryParams(p): QueryParams,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let text = p.get("query").filter(|q| !q.is_empty()).ok_or_else(|| {
        ApiError::bad_request("the query parameter is required, e.g. query={app=\"web\"}".into())
    })?;
    let Expr::Log(mut log) = parse(text)? else {
        return Err(ApiError::bad_request(
            "tail takes a log query, not a metric query".into(),
        ));
    };
    access.scope(&state).await?.narrow(&mut log.selector)?;
    let limit = state.check_limit(p.number("limit")?.unwrap_or(100))?;
    let now = crate::log_database::now_ns();
    let start = p.time("start")?.unwrap_or(now - 3_600_000_000_000);
    let ws = match ws {
        Ok(ws) => Some(ws),
        Err(_) if fanout.from_peer => None,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let guard = TailGuard::take(&state)?;
    let receiver = state.db.subscribe();
    let db = state.db.clone();
    let query = log.clone();
    let backfill = state
        .blocking(move |budget| {
            run_log_query(
                &db,
                &query,
                TimeRange::through(start, now),
                Direction::Backward,
                limit,
                &budget,
            )
        })
        .await?;
    let Some(ws) = ws else {
        let live = Live::new(&state, &log, receiver, &backfill, None);
        return Ok(peer_follow(backfill, live, guard));
    };
    let local = Live::new(&state, &log, receiver, &backfill, None);
    let (mut backfill, peers, missing) =
        cluster_follow(&state, &fanout, &p, backfill, Direction::Backward, limit).await?;
    for m in &missing {
        tracing::debug!(missing = %m, "Tailing without a peer.");
    }
    backfill.reverse();
    let live = local.with_peers(peers);
    // A browser sends its token as a subprotocol (see `auth`); the
    // answer names the page's own, which it offers beside it.
    Ok(ws
        .protocols([crate::api::auth::PAGE_PROTOCOL])
        .on_upgrade(move |socket| run_socket(socket, backfill, live, guard)))
}

/// The peer form of a follow, holding its `--max-tails` slot while it lives.
pub(super) fn peer_follow(initial: Vec<Row>, live: Live, guard: TailGuard) -> Response {
    use futures_util::StreamExt;
    let batches = live.batches().map(move |rows| {
        let _slot = &guard;
        rows
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::cluster::client::PEER_CONTENT_TYPE,
        )],
        fanin::peer_body(initial, Box::pin(batches)),
    )
        .into_response()
}

async fn run_socket(mut socket: WebSocket, backfill: Vec<Row>, mut live: Live, _guard: TailGuard) {
    let message = |rows: &[Row]| {
        serde_json::to_string(&TailFrame::lines(rows)).expect("tail frames serialize")
    };
    if !backfill.is_empty()
        && socket
            .send(Message::Text(message(&backfill).into()))
            .await
            .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            next_rows = live.next() => match next_rows {
                Next::Rows(rows) => {
                    if socket.send(Message::Text(message(&rows).into())).await.is_err() {
                        return;
                    }
                }
                Next::Lagged(n) => {
                    let dropped = serde_json::to_string(&TailFrame::dropped()).expect("tail frames serialize");
                    let _ = socket.send(Message::Text(dropped.into())).await;
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame { code: 1013, reason: format!("too slow: fell {n} writes behind").into() })))
                        .await;
                    return;
                }
                Next::End => {
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server shutting down".into() }))).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                // The client closed or the connection broke.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
