//! Loki's JSON answers as types: the envelope, the four result kinds and
//! the tail frame, serialized exactly as Loki writes them
//! (`pkg/util/marshal` in grafana/loki).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::api::Row;
use crate::log_database::labels::Labels;
use crate::logql::metric::{Series, Steps, Value};

/// A label set as Loki writes it: one JSON object.
fn label_map<L: Borrow<Labels>, S: Serializer>(labels: &L, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(labels.borrow().iter())
}

/// A label set on its own (a `series` answer's element).
#[derive(Serialize)]
pub(crate) struct LabelSet(#[serde(serialize_with = "label_map")] pub(crate) Arc<Labels>);

/// `status/buildinfo`: this version, with Loki's field names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BuildInfo {
    version: &'static str,
    revision: &'static str,
    branch: &'static str,
    build_user: &'static str,
    build_date: &'static str,
    go_version: &'static str,
}

impl Default for BuildInfo {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            revision: "",
            branch: "",
            build_user: "",
            build_date: "",
            go_version: "",
        }
    }
}

/// `{"status": "success", "data": …}`.
#[derive(Serialize)]
pub(crate) struct Success<T: Serialize> {
    status: &'static str,
    data: T,
    /// What the answer lacks (nodes that did not answer), as Loki warns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl<T: Serialize> Success<T> {
    /// Wraps `data`.
    pub(crate) fn new(data: T) -> Self {
        Self {
            status: "success",
            data,
            warnings: Vec::new(),
        }
    }

    /// With `warnings`.
    pub(crate) fn warned(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }
}

/// The `data` of a query answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryData {
    result_type: &'static str,
    /// `["categorize-labels"]` when the answer keeps label categories apart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    encoding_flags: Vec<&'static str>,
    result: QueryResult,
    stats: Empty,
}

/// An empty JSON object.
#[derive(Serialize, Default)]
struct Empty {}

/// What a query returns.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum QueryResult {
    /// Log lines by stream.
    Streams(Vec<StreamValues>),
    /// Series with a value per step.
    Matrix(Vec<MatrixSeries>),
    /// Series with one value.
    Vector(Vec<Sample>),
    /// One number.
    Scalar(Point),
}

impl QueryResult {
    /// Loki's `resultType` for it.
    fn kind(&self) -> &'static str {
        match self {
            QueryResult::Streams(_) => "streams",
            QueryResult::Matrix(_) => "matrix",
            QueryResult::Vector(_) => "vector",
            QueryResult::Scalar(_) => "scalar",
        }
    }

    /// The `data` of the answer.
    pub(crate) fn into_data(self) -> QueryData {
        let encoding_flags = match &self {
            QueryResult::Streams(s) if s.iter().any(|s| s.categorized) => {
                vec![CATEGORIZE_LABELS]
            }
            _ => Vec::new(),
        };
        QueryData {
            result_type: self.kind(),
            encoding_flags,
            result: self,
            stats: Empty::default(),
        }
    }
}

/// The header a client (Grafana) asks for categorised labels with, and
/// the flag's value.
pub(crate) const ENCODING_FLAGS_HEADER: &str = "x-loki-response-encoding-flags";
/// See [`ENCODING_FLAGS_HEADER`].
pub(crate) const CATEGORIZE_LABELS: &str = "categorize-labels";

/// One stream's lines: `{"stream": {…}, "values": [["<ns>", "<line>"], …]}`,
/// or with categories `[["<ns>", "<line>", {"structuredMetadata": …,
/// "parsed": …}], …]`.
#[derive(Serialize)]
pub(crate) struct StreamValues {
    #[serde(serialize_with = "label_map")]
    stream: Arc<Labels>,
    values: Vec<Entry>,
    #[serde(skip)]
    categorized: bool,
}

/// One value of a stream.
#[derive(Serialize)]
#[serde(untagged)]
enum Entry {
    /// `[ts, line]`
    Plain(String, String),
    /// `[ts, line, {categories}]`
    Categorized(String, String, Categories),
}

/// The labels of an entry that are not its stream's, by kind.
#[derive(Serialize, Default)]
struct Categories {
    #[serde(rename = "structuredMetadata", skip_serializing_if = "Option::is_none")]
    structured_metadata: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parsed: Option<BTreeMap<String, String>>,
}

/// Splits an entry's labels into its stream's (kept as they are),
/// structured metadata (`detected_level`) and what the pipeline added.
fn categories(labels: &Labels, stream: &Labels) -> Categories {
    let mut metadata = BTreeMap::new();
    let mut parsed = BTreeMap::new();
    for (name, value) in labels.iter() {
        if stream.get(name) == Some(value) {
            continue;
        }
        if name == crate::log_database::level::LABEL {
            metadata.insert(name.to_owned(), value.to_owned());
        } else {
            parsed.insert(name.to_owned(), value.to_owned());
        }
    }
    Categories {
        structured_metadata: (!metadata.is_empty()).then_some(metadata),
        parsed: (!parsed.is_empty()).then_some(parsed),
    }
}

/// `[<seconds>, "<value>"]`: a sample's time as float seconds, its value as
/// a string (so `NaN` and `±Inf` survive JSON).
#[derive(Serialize)]
pub(crate) struct Point(f64, String);

impl Point {
    fn new(ns: i64, value: f64) -> Self {
        Self(ns as f64 / 1e9, format_value(value))
    }
}

/// A series of a range query.
#[derive(Serialize)]
pub(crate) struct MatrixSeries {
    #[serde(serialize_with = "label_map")]
    metric: Labels,
    values: Vec<Point>,
}

/// A series of an instant query.
#[derive(Serialize)]
pub(crate) struct Sample {
    #[serde(serialize_with = "label_map")]
    metric: Labels,
    value: Point,
}

/// A frame of the tail websocket.
#[derive(Serialize)]
pub(crate) struct TailFrame {
    streams: Vec<StreamValues>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dropped_entries: Vec<DroppedEntry>,
}

/// What a tail frame says of entries it could not deliver.
#[derive(Serialize)]
struct DroppedEntry {
    #[serde(serialize_with = "label_map")]
    labels: Labels,
    timestamp: String,
}

impl TailFrame {
    /// New lines.
    pub(crate) fn lines(rows: &[Row]) -> Self {
        Self {
            streams: streams(rows, false),
            dropped_entries: Vec::new(),
        }
    }

    /// Says that entries were dropped (the client fell behind).
    pub(crate) fn dropped() -> Self {
        Self {
            streams: Vec::new(),
            dropped_entries: vec![DroppedEntry {
                labels: Labels::default(),
                timestamp: "0".into(),
            }],
        }
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Rows grouped by stream, streams ordered by their labels' text (as
/// Loki's engine sorts `Streams`), as Loki's `streams` result: an entry's
/// structured metadata and parsed labels among its stream's labels, or,
/// `categorized`, kept apart in a third element of each value.
pub(crate) fn streams(rows: &[Row], categorized: bool) -> Vec<StreamValues> {
    let mut values: BTreeMap<&Labels, StreamValues> = BTreeMap::new();
    for (labels, ts, line, stream) in rows {
        let key = if categorized { stream } else { labels };
        let entry = values.entry(key).or_insert_with(|| StreamValues {
            stream: key.clone(),
            values: Vec::new(),
            categorized,
        });
        let (ts, line) = (ts.to_string(), String::from_utf8_lossy(line).into_owned());
        entry.values.push(if categorized {
            Entry::Categorized(ts, line, categories(labels, stream))
        } else {
            Entry::Plain(ts, line)
        });
    }
    let mut out: Vec<(String, StreamValues)> = values
        .into_values()
        .map(|s| (s.stream.to_string(), s))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, s)| s).collect()
}

/// A range query's value at `steps` (a scalar becomes one unlabelled series).
pub(crate) fn matrix(value: Value, steps: &Steps) -> QueryResult {
    let series = match value {
        Value::Matrix(m) => m,
        Value::Scalar(v) => vec![Series {
            labels: Labels::default(),
            points: (0..steps.count).map(|k| (k, v)).collect(),
        }],
    };
    QueryResult::Matrix(
        series
            .into_iter()
            .map(|s| MatrixSeries {
                values: s
                    .points
                    .iter()
                    .map(|(k, v)| Point::new(steps.at(*k), *v))
                    .collect(),
                metric: s.labels,
            })
            .collect(),
    )
}

/// An instant query's value at `at`.
pub(crate) fn vector(value: Value, at: i64) -> QueryResult {
    match value {
        Value::Scalar(v) => QueryResult::Scalar(Point::new(at, v)),
        Value::Matrix(m) => QueryResult::Vector(
            m.into_iter()
                .filter_map(|s| {
                    let v = *s.points.get(&0)?;
                    Some(Sample {
                        metric: s.labels,
                        value: Point::new(at, v),
                    })
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_match_lokis_json() {
        let web = Arc::new(Labels::new([("app", "web")]));
        let rows: Vec<Row> = vec![
            (web.clone(), 5, b"a".to_vec(), web.clone()),
            (web.clone(), 7, b"b".to_vec(), web),
        ];
        let answer = Success::new(QueryResult::Streams(streams(&rows, false)).into_data());
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            json!({"status": "success", "data": {"resultType": "streams", "stats": {},
                "result": [{"stream": {"app": "web"}, "values": [["5", "a"], ["7", "b"]]}]}})
        );
        let scalar = vector(Value::Scalar(f64::INFINITY), 2_500_000_000);
        assert_eq!(
            serde_json::to_value(scalar.into_data()).unwrap(),
            json!({"resultType": "scalar", "stats": {}, "result": [2.5, "+Inf"]})
        );
        assert_eq!(
            serde_json::to_value(TailFrame::dropped()).unwrap(),
            json!({"streams": [], "dropped_entries": [{"labels": {}, "timestamp": "0"}]})
        );
        assert_eq!(
            serde_json::to_value(TailFrame::lines(&rows[..1])).unwrap(),
            json!({"streams": [{"stream": {"app": "web"}, "values": [["5", "a"]]}]})
        );
    }
}
