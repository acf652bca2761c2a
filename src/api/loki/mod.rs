//! The Loki read API: same paths, parameters and JSON shapes as Loki, so
//! Grafana's Loki data source and logcli work unchanged.

#[cfg(test)]
mod cases;
pub(crate) mod drilldown;
mod gather;
pub(crate) mod patterns;
pub(crate) mod shapes;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub(super) use self::gather::cluster_rows;
use self::gather::evaluate_steps;
use super::auth::{Access, Scope};
use super::cluster::{Fanout, mark_missing, or_peer_answer, union, warnings};
use crate::cluster::Missing;

use self::shapes::{QueryResult, Success};
use super::params::{FormParams, Params, QueryParams};
use super::{ApiError, AppState, Row};
use crate::log_database::labels::Labels;
use crate::log_database::query::{Direction, Matcher};
use crate::log_database::{IndexStats, TimeRange};
use crate::logql::metric::{Steps, Value};
use crate::logql::{AggregateOp, Expr, Grouping, LogExpr, MetricExpr, RangeExpr, RangeFunc, parse};

const HOUR: i64 = 3_600_000_000_000;
/// Most points a series may have, as in Prometheus and Loki.
const MAX_POINTS: i64 = 11_000;

pub(super) fn required<'a>(p: &'a Params, key: &str, example: &str) -> Result<&'a str, ApiError> {
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

/// The selector of an optional `query` parameter, narrowed to what the
/// caller may read; without one, the scope's own selector (`None`: all).
pub(super) fn scoped_selector(
    scope: &Scope,
    query: Option<&str>,
) -> Result<Option<Vec<Matcher>>, ApiError> {
    match query {
        Some(text) => {
            let mut selector = selector(text)?;
            scope.narrow(&mut selector)?;
            Ok(Some(selector))
        }
        None => scope.selector(),
    }
}

/// A query answer: Loki's envelope around a typed result.
fn answer(result: QueryResult, missing: &[Missing]) -> Response {
    respond(result.into_data(), missing)
}

/// Loki's envelope around `data`, warning of the nodes that did not
/// answer.
pub(super) fn respond<T: Serialize>(data: T, missing: &[Missing]) -> Response {
    mark_missing(
        Json(Success::new(data).warned(warnings(missing))).into_response(),
        missing,
    )
}

/// Loki's default step for a range: the range over 250, in whole
/// seconds, at least 1 s.
pub(super) fn default_step(span: i64) -> i64 {
    (span / 250 / 1_000_000_000).max(1) * 1_000_000_000
}

/// The evaluation steps of a range query: `step` (default: the range over
/// 250 in whole seconds, at least 1 s), at most [`MAX_POINTS`] of them.
fn steps(p: &Params, range: TimeRange) -> Result<Steps, ApiError> {
    let (start, end) = (range.start, range.last());
    let step = p.duration("step")?.unwrap_or(default_step(end - start));
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

/// Keeps at most one entry per `interval` per stream (Loki's `interval`).
fn thin(rows: Vec<Row>, interval: i64, direction: Direction) -> Vec<Row> {
    let mut last: BTreeMap<Arc<Labels>, i64> = BTreeMap::new();
    rows.into_iter()
        .filter(|(labels, ts, _, _)| {
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

/// Whether the client asked for label categories (Grafana does, with
/// `X-Loki-Response-Encoding-Flags: categorize-labels`).
fn categorize(headers: &HeaderMap) -> bool {
    headers
        .get_all(shapes::ENCODING_FLAGS_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|flag| flag.trim() == shapes::CATEGORIZE_LABELS)
}

/// `GET /loki/api/v1/query_range` (and `/query`, the native alias).
pub(super) async fn query_range(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    fanout: Fanout,
    headers: HeaderMap,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let mut expr = parse(required(&p, "query", "{app=\"web\"}")?)?;
    access.scope(&state).await?.narrow_expr(&mut expr)?;
    let range = p.range(HOUR)?;
    state.check_range(range)?;
    let limit = state.check_limit(p.number("limit")?.unwrap_or(100))?;
    let direction = direction(&p, Direction::Backward)?;
    match expr {
        Expr::Log(log) => {
            let range = p.log_range(HOUR)?;
            let (rows, missing) = or_peer_answer!(
                cluster_rows(&state, &fanout, &p, log, range, direction, limit).await?
            );
            let rows = match p.duration("interval")? {
                Some(interval) if interval > 0 => thin(rows, interval, direction),
                _ => rows,
            };
            Ok(answer(
                QueryResult::Streams(shapes::streams(&rows, categorize(&headers))),
                &missing,
            ))
        }
        Expr::Metric(metric) => {
            let steps = steps(&p, range)?;
            let (value, missing) =
                or_peer_answer!(evaluate_steps(&state, &fanout, &p, metric, steps).await?);
            let value = match value {
                // A range query lists series by labels, whatever `sort` did.
                Value::Matrix(mut m) => {
                    m.sort_by(|a, b| a.labels.cmp(&b.labels));
                    Value::Matrix(m)
                }
                scalar => scalar,
            };
            Ok(answer(shapes::matrix(value, &steps), &missing))
        }
    }
}

/// `GET /loki/api/v1/query`: an instant query at `time` (default now).
pub(super) async fn query(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    fanout: Fanout,
    headers: HeaderMap,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let mut expr = parse(required(&p, "query", "vector(1)")?)?;
    access.scope(&state).await?.narrow_expr(&mut expr)?;
    let at = p.time("time")?.unwrap_or_else(crate::log_database::now_ns);
    let limit = state.check_limit(p.number("limit")?.unwrap_or(100))?;
    let direction = direction(&p, Direction::Backward)?;
    match expr {
        Expr::Log(log) => {
            let range = TimeRange::through(at.saturating_sub(HOUR), at);
            let (rows, missing) = or_peer_answer!(
                cluster_rows(&state, &fanout, &p, log, range, direction, limit).await?
            );
            Ok(answer(
                QueryResult::Streams(shapes::streams(&rows, categorize(&headers))),
                &missing,
            ))
        }
        Expr::Metric(metric) => {
            let steps = Steps {
                start: at,
                step: 1_000_000_000,
                count: 1,
            };
            let (value, missing) =
                or_peer_answer!(evaluate_steps(&state, &fanout, &p, metric, steps).await?);
            Ok(answer(shapes::vector(value, at), &missing))
        }
    }
}

/// `GET /loki/api/v1/labels`
pub(super) async fn labels(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    fanout: Fanout,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let range = p.range(6 * HOUR)?;
    let scope = access.scope(&state).await?;
    let selector = scoped_selector(&scope, p.get("query").filter(|s| !s.is_empty()))?;
    let names: Vec<String> = match selector {
        Some(selector) => {
            let mut names: Vec<String> = state
                .db
                .series(&selector, range)?
                .iter()
                .flat_map(|l| l.iter().map(|(n, _)| n.to_owned()).collect::<Vec<_>>())
                .collect();
            names.sort();
            names.dedup();
            names
        }
        None => state.db.label_names(range),
    };
    let (parts, missing) = or_peer_answer!(
        fanout
            .gather(&state, &p, async { Ok(names) })
            .await?
            .parts()
    );
    Ok(respond(union(parts), &missing))
}

/// `GET /loki/api/v1/label/{name}/values`
pub(super) async fn label_values(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    fanout: Fanout,
    Path(name): Path<String>,
    QueryParams(p): QueryParams,
) -> Result<Response, ApiError> {
    let range = p.range(6 * HOUR)?;
    let scope = access.scope(&state).await?;
    let selector = scoped_selector(&scope, p.get("query").filter(|s| !s.is_empty()))?;
    let values = state.db.label_values(&name, selector.as_deref(), range)?;
    let (parts, missing) = or_peer_answer!(
        fanout
            .gather(&state, &p, async { Ok(values) })
            .await?
            .parts()
    );
    Ok(respond(union(parts), &missing))
}

/// `GET|POST /loki/api/v1/series`
pub(super) async fn series(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    fanout: Fanout,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let scope = access.scope(&state).await?;
    let range = p.range(6 * HOUR)?;
    let matches = p.all("match[]");
    if matches.is_empty() {
        return Err(ApiError::bad_request(
            "at least one match[] selector is required, e.g. match[]={app=\"web\"}".into(),
        ));
    }
    let mut all: Vec<Arc<Labels>> = Vec::new();
    for m in matches {
        let mut selector = selector(m)?;
        scope.narrow(&mut selector)?;
        all.extend(state.db.series(&selector, range)?);
    }
    let (parts, missing) =
        or_peer_answer!(fanout.gather(&state, &p, async { Ok(all) }).await?.parts());
    let all: Vec<shapes::LabelSet> = union(parts).into_iter().map(shapes::LabelSet).collect();
    Ok(respond(all, &missing))
}

/// `GET|POST /loki/api/v1/index/stats` (no envelope, as in Loki).
pub(super) async fn index_stats(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    fanout: Fanout,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let mut selector = selector(required(&p, "query", "{app=\"web\"}")?)?;
    access.scope(&state).await?.narrow(&mut selector)?;
    let range = p.range(HOUR)?;
    let stats = state.db.index_stats(&selector, range)?;
    let (parts, missing) = or_peer_answer!(
        fanout
            .gather(&state, &p, async { Ok(stats) })
            .await?
            .parts()
    );
    let mut total = IndexStats::default();
    for part in parts {
        total += part;
    }
    Ok(mark_missing(Json(total).into_response(), &missing))
}

/// How a volume request groups: Loki's `aggregateBy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AggregateBy {
    /// By the `targetLabels`, else by the selector's labels.
    Series,
    /// One volume per label name.
    Labels,
}

fn aggregate_by(p: &Params) -> Result<AggregateBy, ApiError> {
    match p.get("aggregateBy").unwrap_or("series") {
        "" | "series" => Ok(AggregateBy::Series),
        "labels" => Ok(AggregateBy::Labels),
        other => Err(ApiError::bad_request(format!(
            "aggregateBy={other:?}: use series or labels"
        ))),
    }
}

fn target_labels(p: &Params) -> Option<Vec<String>> {
    p.get("targetLabels")
        .filter(|s| !s.is_empty())
        .map(|list| list.split(',').map(|s| s.trim().to_owned()).collect())
}

/// The volume of bytes per series (or per `targetLabels`) as a metric;
/// for `aggregateBy=labels`, per stream (then folded per label name).
fn volume_expr(p: &Params, range: i64, scope: &Scope) -> Result<MetricExpr, ApiError> {
    let text = required(p, "query", "{app=\"web\"}")?;
    let mut selector = selector(text)?;
    // Grouped by the selector's own labels, before the scope adds one.
    let own: Vec<String> = selector.iter().map(|m| m.name.clone()).collect();
    scope.narrow(&mut selector)?;
    let grouping = match aggregate_by(p)? {
        AggregateBy::Series => Grouping {
            without: false,
            labels: target_labels(p).unwrap_or(own),
        },
        // The stream's labels: structured metadata is not indexed.
        AggregateBy::Labels => Grouping {
            without: true,
            labels: vec![crate::log_database::level::LABEL.to_owned()],
        },
    };
    Ok(MetricExpr::Aggregate {
        op: AggregateOp::Sum,
        grouping: Some(grouping),
        param: None,
        inner: Box::new(MetricExpr::Range(Box::new(RangeExpr {
            func: RangeFunc::BytesOverTime,
            log: LogExpr {
                selector,
                stages: Vec::new(),
                unwrap: None,
            },
            range: range.max(1),
            offset: 0,
            grouping: None,
            param: None,
        }))),
    })
}

/// For `aggregateBy=labels`: each stream's volume added to every label
/// name it has (only `targetLabels`, if given), one series per name.
fn per_label_name(p: &Params, value: Value) -> Result<Value, ApiError> {
    if aggregate_by(p)? != AggregateBy::Labels {
        return Ok(value);
    }
    let Value::Matrix(streams) = value else {
        return Ok(value);
    };
    let targets = target_labels(p);
    let mut names: BTreeMap<String, BTreeMap<u32, f64>> = BTreeMap::new();
    for stream in streams {
        for (name, _) in stream.labels.iter() {
            if targets
                .as_ref()
                .is_some_and(|t| !t.iter().any(|l| l == name))
            {
                continue;
            }
            let points = names.entry(name.to_owned()).or_default();
            for (k, v) in &stream.points {
                *points.entry(*k).or_insert(0.0) += v;
            }
        }
    }
    Ok(Value::Matrix(
        names
            .into_iter()
            .map(|(name, points)| crate::logql::metric::Series {
                labels: Labels::name_only(&name),
                points,
            })
            .collect(),
    ))
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

/// The range (checked against the maximum) and series limit of a volume
/// request.
fn volume_window(state: &AppState, p: &Params) -> Result<(TimeRange, usize), ApiError> {
    let range = p.range(HOUR)?;
    state.check_range(range)?;
    Ok((range, p.number("limit")?.unwrap_or(100)))
}

/// `GET /loki/api/v1/index/volume`: bytes per series over `[start, end]`.
pub(super) async fn volume(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    fanout: Fanout,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let (range, limit) = volume_window(&state, &p)?;
    let expr = volume_expr(&p, range.span(), &access.scope(&state).await?)?;
    let steps = Steps {
        start: range.last(),
        step: 1,
        count: 1,
    };
    let (value, missing) = or_peer_answer!(evaluate_steps(&state, &fanout, &p, expr, steps).await?);
    let value = per_label_name(&p, value)?;
    Ok(answer(
        shapes::vector(top(value, limit), range.last()),
        &missing,
    ))
}

/// `GET /loki/api/v1/index/volume_range`: bytes per series per step.
pub(super) async fn volume_range(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    fanout: Fanout,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let (range, limit) = volume_window(&state, &p)?;
    let steps = steps(&p, range)?;
    let expr = volume_expr(&p, steps.step, &access.scope(&state).await?)?;
    let (value, missing) = or_peer_answer!(evaluate_steps(&state, &fanout, &p, expr, steps).await?);
    let value = per_label_name(&p, value)?;
    Ok(answer(shapes::matrix(top(value, limit), &steps), &missing))
}

/// `GET /loki/api/v1/status/buildinfo`
pub(super) async fn buildinfo() -> Json<shapes::BuildInfo> {
    Json(shapes::BuildInfo::default())
}
