//! What Grafana's Logs Drilldown asks beyond queries: the labels worth
//! grouping by (`detected_labels`), the fields in the lines
//! (`detected_fields`, `detected_field/{name}/values`), with Loki's rules
//! (`pkg/querier/querier.go`) and shapes (no envelope, as Loki answers).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{HOUR, required, scoped_selector};
use crate::api::cluster::{Fanout, mark_missing, or_peer_answer};
use crate::api::params::{FormParams, Params, QueryParams};
use crate::api::{ApiError, AppState, Row};
use crate::cluster::Missing;
use crate::log_database::labels::Labels;
use crate::log_database::query::Direction;
use crate::logql::convert::{parse_float, parse_go_duration, parse_humanized_bytes};
use crate::logql::pipeline::detect_fields;
use crate::logql::{Expr, parse};

/// Labels Loki always offers when they have values.
const STATIC_LABELS: &[&str] = &["cluster", "namespace", "instance", "pod"];
/// Lines read to find fields, unless `line_limit` says otherwise.
const LINE_LIMIT: usize = 1000;
/// Fields or values answered, unless `limit` says otherwise.
const LIMIT: usize = 1000;

/// `{"detectedLabels": [{"label": "app", "cardinality": 3}, …]}`
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DetectedLabels {
    detected_labels: Vec<DetectedLabel>,
}

#[derive(Serialize)]
struct DetectedLabel {
    label: String,
    cardinality: u64,
}

/// Whether every value looks like an id (a number or a UUID): such a
/// label is no use to group by (Loki's `containsAllIDTypes`).
fn all_ids(values: &BTreeSet<String>) -> bool {
    values
        .iter()
        .all(|v| parse_float(v).is_some() || is_uuid(v))
}

fn is_uuid(v: &str) -> bool {
    let v = v.strip_prefix("urn:uuid:").unwrap_or(v);
    let v = v
        .strip_prefix('{')
        .and_then(|v| v.strip_suffix('}'))
        .unwrap_or(v);
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
    match v.len() {
        32 => hex(v),
        36 => {
            let parts: Vec<&str> = v.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| hex(p))
        }
        _ => false,
    }
}

/// `GET /loki/api/v1/detected_labels`: the stream labels of the matching
/// streams with their number of values.
pub(crate) async fn detected_labels(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<crate::api::auth::Access>,
    fanout: Fanout,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let range = p.range(6 * HOUR)?;
    let scope = access.scope(&state).await?;
    let query = p
        .get("query")
        .filter(|q| !q.trim().is_empty() && q.trim() != "{}");
    let matchers = scoped_selector(&scope, query)?;
    let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    match &matchers {
        Some(m) => {
            for labels in state.db.series(m, range)? {
                for (name, value) in labels.iter() {
                    values
                        .entry(name.to_owned())
                        .or_default()
                        .insert(value.to_owned());
                }
            }
        }
        None => {
            for name in state.db.label_names(range) {
                let v = state.db.label_values(&name, None, range)?;
                values.insert(name, v.into_iter().collect());
            }
        }
    }
    let (parts, missing) = or_peer_answer!(
        fanout
            .gather(&state, &p, async { Ok(values) })
            .await?
            .parts()
    );
    let mut values = BTreeMap::<String, BTreeSet<String>>::new();
    for part in parts {
        for (name, v) in part {
            values.entry(name).or_default().extend(v);
        }
    }
    let detected_labels = values
        .into_iter()
        .filter(|(name, v)| {
            (STATIC_LABELS.contains(&name.as_str()) && !v.is_empty()) || !all_ids(v)
        })
        .map(|(label, v)| DetectedLabel {
            label,
            cardinality: v.len() as u64,
        })
        .collect();
    Ok(mark_missing(
        Json(DetectedLabels { detected_labels }).into_response(),
        &missing,
    ))
}

/// A field's type, from a value (Loki's `determineType`, in its order).
fn field_type(value: &str) -> &'static str {
    if value.parse::<i64>().is_ok() {
        "int"
    } else if parse_float(value).is_some() {
        "float"
    } else if matches!(
        value,
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
    ) {
        "boolean"
    } else if parse_go_duration(value).is_some() {
        "duration"
    } else if parse_humanized_bytes(value).is_some() {
        "bytes"
    } else {
        "string"
    }
}

/// One field as found over the lines read.
#[derive(Default)]
struct Field {
    kind: &'static str,
    values: BTreeSet<String>,
    parsers: BTreeSet<&'static str>,
    json_path: Option<Vec<String>>,
    /// The stream whose first value typed it (re-typed per stream, as Loki).
    typed_for: Option<Arc<Labels>>,
}

/// `{"fields": [...], "limit": N}`
#[derive(Serialize)]
pub(crate) struct DetectedFields {
    fields: Vec<DetectedFieldOut>,
    limit: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetectedFieldOut {
    label: String,
    #[serde(rename = "type")]
    kind: &'static str,
    cardinality: u64,
    parsers: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_path: Option<Vec<String>>,
}

/// The newest `line_limit` entries of `query` over the range, in the
/// cluster; `Err`: the answer to a peer's request, to send as it is.
async fn sample(
    state: &AppState,
    access: &crate::api::auth::Access,
    fanout: &Fanout,
    p: &Params,
) -> Result<Result<(Vec<Row>, Vec<Missing>), Box<Response>>, ApiError> {
    let text = required(p, "query", "{app=\"web\"}")?;
    let mut log = match parse(text)? {
        Expr::Log(log) => log,
        Expr::Metric(_) => {
            return Err(ApiError::bad_request(format!(
                "{text:?} is a metric query; fields are detected in log queries like {{app=\"web\"}}"
            )));
        }
    };
    access.scope(state).await?.narrow(&mut log.selector)?;
    let range = p.log_range(HOUR)?;
    state.check_range(range)?;
    let limit = state.check_limit(p.number("line_limit")?.unwrap_or(LINE_LIMIT))?;
    super::cluster_rows(state, fanout, p, log, range, Direction::Backward, limit).await
}

/// Where a value was found.
struct Found<'a> {
    parser: Option<&'static str>,
    path: Option<&'a Vec<String>>,
    stream: &'a Arc<Labels>,
}

fn add(out: &mut BTreeMap<String, Field>, limit: usize, name: &str, value: &str, at: Found<'_>) {
    if name == "__error__" || name == "__error_details__" {
        return;
    }
    if !out.contains_key(name) && out.len() >= limit {
        return;
    }
    let field = out.entry(name.to_owned()).or_default();
    if field
        .typed_for
        .as_ref()
        .is_none_or(|s| !Arc::ptr_eq(s, at.stream))
    {
        field.kind = field_type(value);
        field.typed_for = Some(at.stream.clone());
    }
    field.values.insert(value.to_owned());
    if let Some(parser) = at.parser {
        field.parsers.insert(parser);
    }
    if field.json_path.is_none() {
        field.json_path = at.path.cloned();
    }
}

/// Every field of the sampled rows, up to `limit` of them.
fn fields(rows: &[Row], limit: usize) -> BTreeMap<String, Field> {
    let mut out: BTreeMap<String, Field> = BTreeMap::new();
    for (labels, _, line, stream) in rows {
        // What the query's own stages made, and structured metadata.
        for (name, value) in labels.iter() {
            if stream.get(name) != Some(value) {
                let at = Found {
                    parser: None,
                    path: None,
                    stream,
                };
                add(&mut out, limit, name, value, at);
            }
        }
        if let Some((parser, found)) = detect_fields(stream, line) {
            for f in &found {
                let at = Found {
                    parser: Some(parser),
                    path: f.json_path.as_ref(),
                    stream,
                };
                add(&mut out, limit, &f.name, &f.value, at);
            }
        }
    }
    out
}

/// `GET /loki/api/v1/detected_fields`: the fields of the newest lines of
/// a query, with their types, the parsers that found them and how many
/// values each has.
pub(crate) async fn detected_fields(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<crate::api::auth::Access>,
    fanout: Fanout,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let (rows, missing) = or_peer_answer!(sample(&state, &access, &fanout, &p).await?);
    // logcli sends field_limit, Grafana limit.
    let limit = match p.number("field_limit")? {
        Some(n) => n,
        None => p.number("limit")?.unwrap_or(LIMIT),
    };
    let fields = fields(&rows, limit)
        .into_iter()
        .map(|(label, f)| DetectedFieldOut {
            label,
            kind: f.kind,
            cardinality: f.values.len() as u64,
            parsers: (!f.parsers.is_empty()).then(|| f.parsers.into_iter().collect()),
            json_path: f.json_path,
        })
        .collect();
    Ok(mark_missing(
        Json(DetectedFields { fields, limit }).into_response(),
        &missing,
    ))
}

/// `{"values": [...], "limit": N}`
#[derive(Serialize)]
pub(crate) struct FieldValues {
    values: Vec<String>,
    limit: usize,
}

/// `GET /loki/api/v1/detected_field/{name}/values`: the values of one
/// field in the newest lines of a query.
pub(crate) async fn detected_field_values(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<crate::api::auth::Access>,
    fanout: Fanout,
    Path(name): Path<String>,
    QueryParams(p): QueryParams,
) -> Result<Response, ApiError> {
    let (rows, missing) = or_peer_answer!(sample(&state, &access, &fanout, &p).await?);
    let limit = p.number("limit")?.unwrap_or(LIMIT);
    let mut all = fields(&rows, usize::MAX);
    let mut values: Vec<String> = all
        .remove(&name)
        .map(|f| f.values.into_iter().collect())
        .unwrap_or_default();
    values.truncate(limit);
    Ok(mark_missing(
        Json(FieldValues { values, limit }).into_response(),
        &missing,
    ))
}

/// `GET /loki/api/v1/drilldown-limits`: what Logs Drilldown reads to
/// learn which features and limits this backend has (Loki's shape).
pub(crate) async fn limits(State(state): State<AppState>) -> Json<serde_json::Value> {
    let config = &state.config;
    let seconds = |d: std::time::Duration| format!("{}s", d.as_secs());
    Json(serde_json::json!({
        "limits": {
            "discover_log_levels": true,
            "discover_service_name": crate::log_collector::service_name::SOURCES,
            "log_level_fields": ["level", "LEVEL", "Level", "log.level", "severity", "SEVERITY", "Severity", "SeverityText", "lvl", "LVL", "Lvl", "severity_text", "Severity_Text", "SEVERITY_TEXT"],
            "max_entries_limit_per_query": config.max_limit,
            "max_line_size_truncate": false,
            "max_query_bytes_read": "0B",
            "max_query_length": seconds(config.max_range),
            "max_query_lookback": "0s",
            "max_query_range": seconds(config.max_range),
            "max_query_series": config.max_series,
            "metric_aggregation_enabled": false,
            "otlp_config": {},
            "pattern_persistence_enabled": false,
            "query_timeout": seconds(config.query_timeout),
            "retention_period": "0s",
            "retention_stream": [],
            "volume_enabled": true,
            "volume_max_series": 1000,
        },
        "pattern_ingester_enabled": true,
        "version": env!("CARGO_PKG_VERSION"),
        "maxDetectedFields": LIMIT,
        "maxDetectedValues": LIMIT,
        "maxLabelValues": LIMIT,
        "maxLines": LINE_LIMIT,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_types_as_loki() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert!(all_ids(&set(&[
            "1",
            "2.5",
            "123e4567-e89b-12d3-a456-426614174000"
        ])));
        assert!(!all_ids(&set(&["1", "web"])));
        assert_eq!(field_type("200"), "int");
        assert_eq!(field_type("0.5"), "float");
        assert_eq!(field_type("true"), "boolean");
        assert_eq!(field_type("250ms"), "duration");
        assert_eq!(field_type("2MB"), "bytes");
        assert_eq!(field_type("GET"), "string");
    }
}
