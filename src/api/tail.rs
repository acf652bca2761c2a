//! Live tails: `/logs/...?follow=true` (chunked ndjson or text) and Loki's
//! `/loki/api/v1/tail` websocket. Both receive every write from the store
//! as it happens; a subscriber that falls behind is told so and dropped, so
//! memory never grows with a slow client.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::stream;
use serde_json::json;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::logs::Format;
use super::loki::shapes::TailFrame;
use super::params::QueryParams;
use super::{ApiError, AppState, Row, run_log_query};
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
        for (labels, entries) in &appended.streams {
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

async fn next(live: &mut Receiver<Arc<Appended>>, shutdown: &Shutdown, matcher: &Matcher) -> Next {
    loop {
        if shutdown.is_triggered() {
            return Next::End;
        }
        tokio::select! {
            received = live.recv() => match received {
                Ok(appended) => {
                    let rows = matcher.rows(&appended);
                    if !rows.is_empty() {
                        return Next::Rows(rows);
                    }
                }
                Err(RecvError::Lagged(n)) => return Next::Lagged(n),
                Err(RecvError::Closed) => return Next::End,
            },
            () = shutdown.wait() => return Next::End,
        }
    }
}

/// The body of a `follow=true` response: `initial`, then new matching lines
/// until the client goes away, the server stops, or the client falls behind.
pub(super) fn follow_body(
    state: &AppState,
    log: LogExpr,
    initial: Vec<Row>,
    format: Format,
    live: Receiver<Arc<Appended>>,
    guard: TailGuard,
) -> Body {
    let matcher = Matcher::new(&log);
    // Lines written while the initial query ran arrive live too: skip those
    // already sent.
    let seen: HashSet<Row> = initial.iter().cloned().collect();
    let first: Vec<u8> = format.rows(&initial);
    let shutdown = state.shutdown.clone();
    let stream = stream::unfold(
        (Some(first), live, shutdown, matcher, seen, guard, false),
        move |(first, mut live, shutdown, matcher, mut seen, guard, done)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<Bytes, std::convert::Infallible>(Bytes::from(first)),
                    (None, live, shutdown, matcher, seen, guard, done),
                ));
            }
            if done {
                return None;
            }
            match next(&mut live, &shutdown, &matcher).await {
                Next::Rows(rows) => {
                    let chunk =
                        format.rows(rows.iter().filter(|r| seen.is_empty() || !seen.remove(*r)));
                    Some((
                        Ok(Bytes::from(chunk)),
                        (None, live, shutdown, matcher, seen, guard, false),
                    ))
                }
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
                    Some((
                        Ok(Bytes::from(message)),
                        (None, live, shutdown, matcher, seen, guard, true),
                    ))
                }
                Next::End => None,
            }
        },
    );
    Body::from_stream(stream)
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

/// `GET /loki/api/v1/tail` (websocket): Loki's tail protocol.
pub(super) async fn websocket(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<crate::api::auth::Access>,
    QueryParams(p): QueryParams,
    ws: WebSocketUpgrade,
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
    let guard = TailGuard::take(&state)?;
    let live = state.db.subscribe();
    let db = state.db.clone();
    let query = log.clone();
    let mut backfill = state
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
    backfill.reverse();
    Ok(ws.on_upgrade(move |socket| run_socket(socket, state, log, backfill, live, guard)))
}

async fn run_socket(
    mut socket: WebSocket,
    state: AppState,
    log: LogExpr,
    backfill: Vec<Row>,
    mut live: Receiver<Arc<Appended>>,
    _guard: TailGuard,
) {
    let matcher = Matcher::new(&log);
    let shutdown = state.shutdown.clone();
    let message = |rows: &[Row]| {
        serde_json::to_string(&TailFrame::lines(rows)).expect("tail frames serialize")
    };
    let mut seen: HashSet<Row> = backfill.iter().cloned().collect();
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
            next_rows = next(&mut live, &shutdown, &matcher) => match next_rows {
                Next::Rows(rows) => {
                    let rows: Vec<Row> = rows.into_iter().filter(|r| seen.is_empty() || !seen.remove(r)).collect();
                    if !rows.is_empty() && socket.send(Message::Text(message(&rows).into())).await.is_err() {
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
