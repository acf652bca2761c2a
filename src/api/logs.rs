//! The curl-friendly routes: `/logs/{label}/{value}` and `/status`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::cluster::or_peer_answer;
use super::loki::direction;
use super::params::QueryParams;
use super::{ApiError, AppState, Row, run_log_query, tail};

use crate::log_database::labels::{Labels, sanitize_name};
use crate::log_database::query::{Direction, LineFilter, Matcher};
use crate::log_database::{TimeRange, now_ns};
use crate::logql::{LogExpr, Stage};

/// How `/logs` writes lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    /// A JSON array of lines.
    Json,
    /// One JSON object per line: timestamp, labels, line.
    Ndjson,
    /// The lines as text.
    Text,
}

impl Format {
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Text => "text/plain; charset=utf-8",
        }
    }

    /// Rows as they go on the wire, one after another (not for `Json`,
    /// which is an array). Written straight into one buffer, each stream's
    /// labels encoded once: a follower of a busy pod gets thousands of rows
    /// a second.
    pub(super) fn rows<'a>(self, rows: impl IntoIterator<Item = &'a Row>) -> Vec<u8> {
        let mut out = Vec::new();
        // The rows are borrowed throughout, so a label set's address
        // cannot be reused by another one meanwhile.
        let mut last: Option<(*const Labels, Vec<u8>)> = None;
        for (labels, ts, line, _) in rows {
            match self {
                Format::Text | Format::Json => {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
                Format::Ndjson => {
                    let ptr = Arc::as_ptr(labels);
                    if last.as_ref().is_none_or(|(p, _)| *p != ptr) {
                        last = Some((ptr, labels_object(labels)));
                    }
                    let (_, json) = last.as_ref().expect("just set");
                    // Keys in the order a JSON object map sorts them.
                    out.extend_from_slice(b"{\"labels\":");
                    out.extend_from_slice(json);
                    out.extend_from_slice(b",\"line\":");
                    json_string(&mut out, &String::from_utf8_lossy(line));
                    out.extend_from_slice(b",\"timestamp\":\"");
                    out.extend_from_slice(ts.to_string().as_bytes());
                    out.extend_from_slice(b"\"}\n");
                }
            }
        }
        out
    }
}

/// `labels` as a JSON object.
fn labels_object(labels: &Labels) -> Vec<u8> {
    let mut out = vec![b'{'];
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, name);
        out.push(b':');
        json_string(&mut out, value);
    }
    out.push(b'}');
    out
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn rfc3339(ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// `GET /logs/{key}/{*value}`: the lines of streams whose label `key` is
/// `value`. By default the newest `limit` lines, oldest first, as `tail`
/// shows them; `direction=forward` gives the oldest from `start` instead.
pub(super) async fn logs(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<crate::api::auth::Access>,
    fanout: super::cluster::Fanout,
    Path((key, value)): Path<(String, String)>,
    QueryParams(p): QueryParams,
) -> Result<Response, ApiError> {
    if sanitize_name(&key) != key {
        return Err(ApiError::bad_request(format!(
            "{key:?} is not a label name; names are like namespace, pod_name or app_kubernetes_io_name"
        )));
    }
    let follow = match p.get("follow") {
        None | Some("false") | Some("") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "follow={other:?}: use true or false"
            )));
        }
    };
    let format = match p.get("format") {
        None | Some("") if follow => Format::Ndjson,
        None | Some("") | Some("json") => Format::Json,
        Some("ndjson") => Format::Ndjson,
        Some("text") => Format::Text,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format={other:?}: use json, ndjson or text"
            )));
        }
    };
    if follow && format == Format::Json {
        return Err(ApiError::bad_request(
            "follow=true streams lines: use format=ndjson or format=text".into(),
        ));
    }
    // Only an open API may say which labels exist (and only of this node
    // when it answers alone); the label list is read only then.
    let alone = !fanout.asks_peers(&state, &p)? && !fanout.from_peer;
    if alone && !follow && access.identity().is_none() {
        let known = state.db.label_names(TimeRange::ALL);
        if !known.contains(&key) {
            return Err(ApiError {
                status: axum::http::StatusCode::NOT_FOUND,
                message: format!("unknown label {key:?}; known labels: {}", known.join(", ")),
            });
        }
    }
    // All time unless start/since says otherwise.
    let range = p.range(now_ns())?;
    let limit = state.check_limit(p.number("limit")?.unwrap_or(1000))?;
    let explicit = p.get("direction").is_some();
    let direction = direction(&p, Direction::Backward)?;
    let mut stages = Vec::new();
    if let Some(needle) = p.get("contains") {
        stages.push(Stage::Line(Box::new(LineFilter::contains(
            needle.as_bytes(),
            false,
        ))));
    }
    if let Some(pattern) = p.get("regex") {
        stages.push(Stage::Line(Box::new(LineFilter::regex(pattern, false)?)));
    }
    let mut log = LogExpr {
        selector: vec![Matcher::equal(&key, &value)],
        stages,
        unwrap: None,
    };
    access.scope(&state).await?.narrow(&mut log.selector)?;
    // Subscribe before querying, so nothing written in between is missed.
    let guard = follow.then(|| tail::TailGuard::take(&state)).transpose()?;
    let live = follow.then(|| state.db.subscribe());
    if let (Some(receiver), Some(guard)) = (live, guard) {
        let db = state.db.clone();
        let query = log.clone();
        let rows = state
            .blocking(move |budget| run_log_query(&db, &query, range, direction, limit, &budget))
            .await?;
        let local = tail::Live::new(&state, &log, receiver, &rows, None);
        if fanout.from_peer {
            return Ok(tail::peer_follow(rows, local, guard));
        }
        let (mut rows, peers, missing) =
            tail::cluster_follow(&state, &fanout, &p, rows, direction, limit).await?;
        if !explicit {
            rows.reverse();
        }
        let body = tail::follow_body(rows, format, local.with_peers(peers), guard);
        return Ok(super::cluster::mark_missing(
            ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
            &missing,
        ));
    }
    let (mut rows, missing) = or_peer_answer!(
        super::loki::cluster_rows(&state, &fanout, &p, log, range, direction, limit).await?
    );
    if !explicit {
        rows.reverse();
    }
    let body = match format {
        Format::Json => {
            let lines: Vec<String> = rows
                .iter()
                .map(|(_, _, l, _)| String::from_utf8_lossy(l).into_owned())
                .collect();
            serde_json::to_vec(&lines).expect("strings serialize")
        }
        other => other.rows(&rows),
    };
    Ok(super::cluster::mark_missing(
        (
            [(header::CONTENT_TYPE, format.content_type())],
            Body::from(body),
        )
            .into_response(),
        &missing,
    ))
}

/// `GET /status`: what is being collected and stored.
pub(super) async fn status(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<super::auth::Access>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // A user who may not read everything sees only their namespaces'
    // figures: no collector-wide counts, no other namespace's labels.
    if let Some(selector) = access.scope(&state).await?.selector()? {
        let stats = state.db.index_stats(&selector, TimeRange::ALL)?;
        let mut labels: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            std::collections::BTreeMap::new();
        for stream in state.db.series(&selector, TimeRange::ALL)? {
            for (name, value) in stream.iter() {
                labels
                    .entry(name.to_owned())
                    .or_default()
                    .insert(value.to_owned());
            }
        }
        let counts: std::collections::BTreeMap<String, usize> =
            labels.into_iter().map(|(n, v)| (n, v.len())).collect();
        return Ok(Json(json!({
            "store": {
                "streams": stats.streams,
                "chunks": stats.chunks,
                "entries": stats.entries,
                "bytes_raw": stats.bytes,
            },
            "labels": counts,
        })));
    }
    let collector = state.collector.report();
    let store = state.db.stats();
    let now = now_ns();
    // Rates are refreshed as batches arrive; quiet means zero.
    let fresh = collector
        .last_checkpoint
        .is_some_and(|t| now - t < 5_000_000_000);
    let rate = |v: f64| if fresh { v } else { 0.0 };
    Ok(Json(json!({
        "collector": {
            "files_watched": collector.files_watched,
            "lag_bytes": collector.lag_bytes,
            "lines_per_second": rate(collector.lines_per_second),
            "bytes_per_second": rate(collector.bytes_per_second),
            "last_checkpoint": collector.last_checkpoint.map(rfc3339),
            "lines_total": collector.counters.lines,
            "bytes_total": collector.counters.bytes,
            "lines_split": collector.counters.lines_split,
            "files_rotated": collector.counters.files_rotated,
            "truncations": collector.counters.truncations,
            "kubernetes": collector.kubernetes.as_ref().map(|k| json!({
                "malformed_lines": k.malformed_lines,
                "truncated_lines": k.truncated_lines,
                "unrecognised_files": k.unrecognised_files,
                "lines_without_pod_metadata": {
                    "api_unavailable": k.without_metadata_api_unavailable,
                    "pod_unknown": k.without_metadata_pod_unknown,
                },
            })),
        },
        "store": {
            "streams": store.streams,
            "chunks": store.chunks,
            "entries": store.entries,
            "bytes_raw": store.raw_bytes,
            "bytes_stored": store.stored_bytes,
            "bytes_in_memory": store.head_bytes,
            "oldest": store.oldest.map(rfc3339),
            "newest": store.newest.map(rfc3339),
            "flushes": store.flushes,
            "flush_errors": store.flush_errors,
        },
        "labels": state.db.label_cardinality(),
        "tail_subscribers": state.db.subscribers(),
        "peers": state.peers.list(),
        "sinks": state.sinks.iter().map(|s| s.report(store.newest)).collect::<Vec<_>>(),
    })))
}
