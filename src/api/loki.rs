//! The Loki read API: same paths, parameters and JSON shapes as Loki, so
//! Grafana's Loki data source and logcli work unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Value as Json_, json};

use super::params::Params;
use super::{ApiError, AppState, Row, run_log_query};
use crate::log_database::labels::Labels;
use crate::log_database::query::{Direction, Matcher};
use crate::logql::metric::{Steps, Value, evaluate};
use crate::logql::{AggregateOp, Expr, Grouping, LogExpr, MetricExpr, RangeFunc, parse};

const HOUR: i64 = 3_600_000_000_000;
/// Most points a series may have, as in Prometheus and Loki.
const MAX_POINTS: i64 = 11_000;

/// Query string plus form body (Loki accepts POST forms too).
pub(super) fn params(query: Option<String>, body: &Bytes) -> Result<Params, ApiError> {
    let mut p = Params::parse(query.as_deref().unwrap_or(""))?;
    if !body.is_empty() {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the form body is not UTF-8".into()))?;
        p.extend(Params::parse(text)?);
    }
    Ok(p)
}

fn required<'a>(p: &'a Params, key: &str, example: &str) -> Result<&'a str, ApiError> {
    p.get(key).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        ApiError::bad_request(format!(
            "the {key} parameter is required, e.g. {key}={example}"
        ))
    })
}

pub(super) fn direction(p: &Params, default: Direction) -> Result<Direction, ApiError> {
    match p.get("direction").map(|d| d.to_ascii_lowercase()) {
        None => Ok(default),
        Some(d) if d.is_empty() => Ok(default),
        Some(d) if d == "forward" => Ok(Direction::Forward),
        Some(d) if d == "backward" => Ok(Direction::Backward),
        Some(d) => Err(ApiError::bad_request(format!(
            "direction={d:?}: use forward or backward"
        ))),
    }
}

/// A selector alone (for labels, series and index endpoints).
fn selector(text: &str) -> Result<Vec<Matcher>, ApiError> {
    match parse(text)? {
        Expr::Log(LogExpr { selector, .. }) => Ok(selector),
        Expr::Metric(_) => Err(ApiError::bad_request(format!(
            "{text:?} is not a stream selector like {{app=\"web\"}}"
        ))),
    }
}

pub(super) fn labels_json(labels: &Labels) -> Json_ {
    Json_::Object(
        labels
            .iter()
            .map(|(n, v)| (n.to_owned(), Json_::String(v.to_owned())))
            .collect(),
    )
}

fn success(data: Json_) -> Json<Json_> {
    Json(json!({"status": "success", "data": data}))
}

/// A query answer: Loki's envelope around a typed result.
fn answer(kind: &str, result: Json_) -> Json<Json_> {
    success(json!({"resultType": kind, "result": result, "stats": {}}))
}

/// The evaluation steps of a range query: `step` (default: the range over
/// 250, at least 1 s), at most [`MAX_POINTS`] of them.
fn steps(p: &Params, start: i64, end: i64) -> Result<Steps, ApiError> {
    let step = p
        .duration("step")?
        .unwrap_or(((end - start) / 250).max(1_000_000_000));
    if step <= 0 {
        return Err(ApiError::bad_request(
            "step must be positive, e.g. step=15s".into(),
        ));
    }
    let points = (end - start) / step + 1;
    if points > MAX_POINTS {
        return Err(ApiError::bad_request(format!(
            "the query would return {points} points per series, over the maximum of {MAX_POINTS}; increase step (e.g. step={}s)",
            (end - start) / MAX_POINTS / 1_000_000_000 + 1
        )));
    }
    Ok(Steps {
        start,
        step,
        count: points as u32,
    })
}

/// Rows grouped by stream, in first-seen order, as Loki's `streams` result.
pub(super) fn streams_json(rows: &[Row]) -> Json_ {
    let mut order: Vec<&Arc<Labels>> = Vec::new();
    let mut values: BTreeMap<&Labels, Vec<Json_>> = BTreeMap::new();
    for (labels, ts, line) in rows {
        let entry = values.entry(labels).or_insert_with(|| {
            order.push(labels);
            Vec::new()
        });
        entry.push(json!([ts.to_string(), String::from_utf8_lossy(line)]));
    }
    Json_::Array(
        order
            .into_iter()
            .map(|labels| json!({"stream": labels_json(labels), "values": values.remove(&**labels).unwrap_or_default()}))
            .collect(),
    )
}

fn seconds(ns: i64) -> Json_ {
    json!(ns as f64 / 1e9)
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn matrix_json(value: Value, steps: &Steps) -> Json_ {
    let series = match value {
        Value::Matrix(m) => m,
        Value::Scalar(v) => vec![crate::logql::metric::Series {
            labels: Labels::default(),
            points: (0..steps.count).map(|k| (k, v)).collect(),
        }],
    };
    Json_::Array(
        series
            .into_iter()
            .map(|s| {
                let values: Vec<Json_> = s
                    .points
                    .iter()
                    .map(|(k, v)| json!([seconds(steps.at(*k)), format_value(*v)]))
                    .collect();
                json!({"metric": labels_json(&s.labels), "values": values})
            })
            .collect(),
    )
}

fn vector_json(value: Value, at: i64) -> (&'static str, Json_) {
    match value {
        Value::Scalar(v) => ("scalar", json!([seconds(at), format_value(v)])),
        Value::Matrix(m) => (
            "vector",
            Json_::Array(
                m.into_iter()
                    .filter_map(|s| {
                        let v = s.points.get(&0)?;
                        Some(json!({"metric": labels_json(&s.labels), "value": [seconds(at), format_value(*v)]}))
                    })
                    .collect(),
            ),
        ),
    }
}

/// Keeps at most one entry per `interval` per stream (Loki's `interval`).
fn thin(rows: Vec<Row>, interval: i64, direction: Direction) -> Vec<Row> {
    let mut last: BTreeMap<Arc<Labels>, i64> = BTreeMap::new();
    rows.into_iter()
        .filter(|(labels, ts, _)| {
            let keep = match last.get(labels) {
                None => true,
                Some(prev) => match direction {
                    Direction::Forward => *ts >= prev.saturating_add(interval),
                    Direction::Backward => *ts <= prev.saturating_sub(interval),
                },
            };
            if keep {
                last.insert(labels.clone(), *ts);
            }
            keep
        })
        .collect()
}

async fn evaluate_steps(
    state: &AppState,
    metric: MetricExpr,
    steps: Steps,
) -> Result<Value, ApiError> {
    let db = state.db.clone();
    state
        .blocking(move |budget| Ok(evaluate(&metric, &db, &steps, &budget)?))
        .await
}

/// `GET /loki/api/v1/query_range` (and `/query`, the native alias).
pub(super) async fn query_range(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Json<Json_>, ApiError> {
    let p = params(q, &body)?;
    let expr = parse(required(&p, "query", "{app=\"web\"}")?)?;
    let (start, end) = p.range(HOUR)?;
    state.check_range(start, end)?;
    let limit = state.check_limit(p.number("limit")?.unwrap_or(100))?;
    let direction = direction(&p, Direction::Backward)?;
    match expr {
        Expr::Log(log) => {
            let db = state.db.clone();
            // Loki's end is inclusive for queries; the store's is exclusive.
            let range = (start, end.saturating_add(1));
            let rows = state
                .blocking(move |budget| run_log_query(&db, &log, range, direction, limit, &budget))
                .await?;
            let rows = match p.duration("interval")? {
                Some(interval) if interval > 0 => thin(rows, interval, direction),
                _ => rows,
            };
            Ok(answer("streams", streams_json(&rows)))
        }
        Expr::Metric(metric) => {
            let steps = steps(&p, start, end)?;
            let value = evaluate_steps(&state, metric, steps).await?;
            Ok(answer("matrix", matrix_json(value, &steps)))
        }
    }
}

/// `GET /loki/api/v1/query`: an instant query at `time` (default now).
pub(super) async fn query(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Json<Json_>, ApiError> {
    let p = params(q, &body)?;
    let expr = parse(required(&p, "query", "vector(1)")?)?;
    let at = p.time("time")?.unwrap_or_else(crate::log_database::now_ns);
    let limit = state.check_limit(p.number("limit")?.unwrap_or(100))?;
    let direction = direction(&p, Direction::Backward)?;
    match expr {
        Expr::Log(log) => {
            let db = state.db.clone();
            let range = (at.saturating_sub(HOUR), at.saturating_add(1));
            let rows = state
                .blocking(move |budget| run_log_query(&db, &log, range, direction, limit, &budget))
                .await?;
            Ok(answer("streams", streams_json(&rows)))
        }
        Expr::Metric(metric) => {
            let steps = Steps {
                start: at,
                step: 1_000_000_000,
                count: 1,
            };
            let value = evaluate_steps(&state, metric, steps).await?;
            let (kind, result) = vector_json(value, at);
            Ok(answer(kind, result))
        }
    }
}

/// `GET /loki/api/v1/labels`
pub(super) async fn labels(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Json<Json_>, ApiError> {
    let p = params(q, &body)?;
    let (start, end) = p.range(6 * HOUR)?;
    let names: Vec<String> = match p.get("query").filter(|s| !s.is_empty()) {
        Some(text) => {
            let selector = selector(text)?;
            let mut names: Vec<String> = state
                .db
                .series(&selector, start, end.saturating_add(1))?
                .iter()
                .flat_map(|l| l.iter().map(|(n, _)| n.to_owned()).collect::<Vec<_>>())
                .collect();
            names.sort();
            names.dedup();
            names
        }
        None => state.db.label_names(start, end.saturating_add(1)),
    };
    Ok(success(json!(names)))
}

/// `GET /loki/api/v1/label/{name}/values`
pub(super) async fn label_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Json_>, ApiError> {
    let p = params(q, &Bytes::new())?;
    let (start, end) = p.range(6 * HOUR)?;
    let selector = p
        .get("query")
        .filter(|s| !s.is_empty())
        .map(selector)
        .transpose()?;
    let values = state
        .db
        .label_values(&name, selector.as_deref(), start, end.saturating_add(1))?;
    Ok(success(json!(values)))
}

/// `GET|POST /loki/api/v1/series`
pub(super) async fn series(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Json<Json_>, ApiError> {
    let p = params(q, &body)?;
    let (start, end) = p.range(6 * HOUR)?;
    let matches = p.all("match[]");
    if matches.is_empty() {
        return Err(ApiError::bad_request(
            "at least one match[] selector is required, e.g. match[]={app=\"web\"}".into(),
        ));
    }
    let mut all: Vec<Arc<Labels>> = Vec::new();
    for m in matches {
        all.extend(
            state
                .db
                .series(&selector(m)?, start, end.saturating_add(1))?,
        );
    }
    all.sort();
    all.dedup();
    Ok(success(Json_::Array(
        all.iter().map(|l| labels_json(l)).collect(),
    )))
}

/// `GET|POST /loki/api/v1/index/stats` (no envelope, as in Loki).
pub(super) async fn index_stats(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Json<Json_>, ApiError> {
    let p = params(q, &body)?;
    let selector = selector(required(&p, "query", "{app=\"web\"}")?)?;
    let (start, end) = p.range(HOUR)?;
    let stats = state
        .db
        .index_stats(&selector, start, end.saturating_add(1))?;
    Ok(Json(json!(stats)))
}

/// The volume of bytes per series (or per `targetLabels`) as a metric.
fn volume_expr(p: &Params, range: i64) -> Result<MetricExpr, ApiError> {
    let text = required(p, "query", "{app=\"web\"}")?;
    let selector = selector(text)?;
    let labels: Vec<String> = match p.get("targetLabels").filter(|s| !s.is_empty()) {
        Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
        None => selector.iter().map(|m| m.name.clone()).collect(),
    };
    Ok(MetricExpr::Aggregate {
        op: AggregateOp::Sum,
        grouping: Some(Grouping {
            without: false,
            labels,
        }),
        param: None,
        inner: Box::new(MetricExpr::Range {
            func: RangeFunc::BytesOverTime,
            log: LogExpr {
                selector,
                stages: Vec::new(),
            },
            range: range.max(1),
        }),
    })
}

fn top(value: Value, limit: usize) -> Value {
    match value {
        Value::Matrix(mut m) => {
            let total = |s: &crate::logql::metric::Series| s.points.values().sum::<f64>();
            m.sort_by(|a, b| total(b).total_cmp(&total(a)));
            m.truncate(limit);
            Value::Matrix(m)
        }
        other => other,
    }
}

/// `GET /loki/api/v1/index/volume`: bytes per series over `[start, end]`.
pub(super) async fn volume(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Json<Json_>, ApiError> {
    let p = params(q, &body)?;
    let (start, end) = p.range(HOUR)?;
    state.check_range(start, end)?;
    let limit = p.number("limit")?.unwrap_or(100);
    let expr = volume_expr(&p, end - start + 1)?;
    let value = evaluate_steps(
        &state,
        expr,
        Steps {
            start: end,
            step: 1,
            count: 1,
        },
    )
    .await?;
    let (kind, result) = vector_json(top(value, limit), end);
    Ok(answer(kind, result))
}

/// `GET /loki/api/v1/index/volume_range`: bytes per series per step.
pub(super) async fn volume_range(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Json<Json_>, ApiError> {
    let p = params(q, &body)?;
    let (start, end) = p.range(HOUR)?;
    state.check_range(start, end)?;
    let limit = p.number("limit")?.unwrap_or(100);
    let steps = steps(&p, start, end)?;
    let value = evaluate_steps(&state, volume_expr(&p, steps.step)?, steps).await?;
    Ok(answer("matrix", matrix_json(top(value, limit), &steps)))
}

/// `GET /loki/api/v1/status/buildinfo`
pub(super) async fn buildinfo() -> Json<Json_> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}
