//! LogQL cases from Loki's documentation, each run through the store and
//! the engine and compared as Loki's JSON `result`. Every case names the
//! section of `docs/sources/query/` (grafana/loki) its example comes from.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value as Json, json};

use super::shapes::{self, QueryResult};
use crate::api::run_log_query;
use crate::log_database::labels::Labels;
use crate::log_database::query::Direction;
use crate::log_database::{Config, Database, StreamEntries, TimeRange, WriteBatch};
use crate::logql::metric::{Budget, Steps, evaluate};
use crate::logql::{Expr, parse};

const S: i64 = 1_000_000_000;

/// What a case asks.
enum Ask {
    /// A log query over the whole data, oldest first.
    Logs,
    /// An instant metric query at `T0 + n` seconds.
    At(i64),
    /// A query that must be refused with an error containing this.
    Refused(&'static str),
}

/// A stream's labels and its lines (seconds after `t0`, line).
type Input = Vec<(Vec<(&'static str, &'static str)>, Vec<(i64, &'static str)>)>;

struct Case {
    section: &'static str,
    query: &'static str,
    /// (stream labels, [(seconds after T0, line)]).
    input: Input,
    ask: Ask,
    /// The `result` of Loki's answer, with `T0+n` written as `n` seconds.
    want: Json,
}

fn t0() -> i64 {
    // An hour ago, on the second: recent enough for any retention.
    (crate::log_database::now_ns() / S - 3600) * S
}

fn budget() -> Budget {
    Budget {
        deadline: Instant::now() + std::time::Duration::from_secs(10),
        cancelled: Arc::default(),
        max_series: 1000,
        memory: crate::memory::MemoryLimit::default(),
    }
}

/// Rewrites timestamps in an answer to seconds after `t0`.
fn relative(mut v: Json, t0: i64) -> Json {
    if let Some(result) = v.as_array_mut() {
        for item in result {
            if let Some(values) = item.get_mut("values").and_then(Json::as_array_mut) {
                for pair in values {
                    let ns: i64 = pair[0].as_str().unwrap().parse().unwrap();
                    pair[0] = json!((ns - t0) / S);
                }
            }
            if let Some(value) = item.get_mut("value").and_then(Json::as_array_mut) {
                let secs = value[0].as_f64().unwrap();
                value[0] = json!((secs as i64) - t0 / S);
            }
        }
    }
    v
}

fn run(case: &Case) -> Result<Json, String> {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), Config::default()).unwrap();
    let t0 = t0();
    let mut batch = WriteBatch::default();
    for (labels, lines) in &case.input {
        batch.streams.push(StreamEntries::with(
            Labels::new(labels.iter().copied()),
            lines
                .iter()
                .map(|(t, l)| (t0 + t * S, l.as_bytes().to_vec())),
        ));
    }
    db.write(&batch).unwrap();
    let expr = parse(case.query).map_err(|e| e.to_string())?;
    let result = match (expr, &case.ask) {
        (Expr::Log(log), _) => {
            let range = TimeRange::through(t0 - 3600 * S, t0 + 3600 * S);
            let rows = run_log_query(&db, &log, range, Direction::Forward, 1000, &budget())
                .map_err(|e| e.message)?;
            QueryResult::Streams(shapes::streams(&rows, false))
        }
        (Expr::Metric(_), Ask::Logs) => return Err("a metric query asked as logs".into()),
        (Expr::Metric(m), ask) => {
            let at = t0 + secs_of(ask) * S;
            let steps = Steps {
                start: at,
                step: S,
                count: 1,
            };
            let value = evaluate(&m, &db, &steps, &budget()).map_err(|e| e.to_string())?;
            shapes::vector(value, at)
        }
    };
    let data = serde_json::to_value(result.into_data()).unwrap();
    Ok(relative(data["result"].clone(), t0))
}

fn secs_of(ask: &Ask) -> i64 {
    match ask {
        Ask::At(s) => *s,
        _ => 60,
    }
}

fn stream(labels: Json, values: &[(i64, &str)]) -> Json {
    json!({"stream": labels, "values": values.iter().map(|(t, l)| json!([t, l])).collect::<Vec<_>>()})
}

fn sample(labels: Json, at: i64, v: &str) -> Json {
    json!({"metric": labels, "value": [at, v]})
}

/// Two pods of an API logging logfmt: latency, size, a counter, a level.
fn api() -> Input {
    vec![
        (
            vec![("app", "api"), ("pod", "a")],
            vec![
                (1, "took=1s size=1KB n=10 level=info"),
                (2, "took=3s size=2KB n=20 level=error"),
                (3, "took=2s size=3KB n=5 level=info"),
            ],
        ),
        (
            vec![("app", "api"), ("pod", "b")],
            vec![
                (2, "took=500ms size=1KB n=1 level=warn"),
                (4, "took=1500ms size=1KB n=3 level=info"),
            ],
        ),
    ]
}

fn cases() -> Vec<Case> {
    let access = vec![(
        vec![("job", "varlogs")],
        vec![
            (
                1,
                r#"{"level": "info", "method": "GET", "path": "/", "host": "grafana.net", "status": "200"}"#,
            ),
            (
                2,
                r#"{"level": "info", "method": "POST", "path": "/", "host": "grafana.net", "status": "200"}"#,
            ),
        ],
    )];
    let frontend = vec![(
        vec![("container", "frontend")],
        vec![
            (
                1,
                "at=info method=GET path=/ host=grafana.net fwd=\"124.133.124.161\" service=8ms status=200 size=2MB",
            ),
            (
                2,
                "at=warn method=POST path=/api host=grafana.net fwd=\"10.0.0.1\" service=1.5s status=503 size=12kB",
            ),
            (3, "not logfmt \"at all"),
        ],
    )];
    vec![
        Case {
            section: "log_queries: Line filter expression (|= and !=)",
            query: r#"{container="frontend"} |= "grafana" != "POST""#,
            input: frontend.clone(),
            ask: Ask::Logs,
            want: json!([stream(
                json!({"container": "frontend", "detected_level": "info"}),
                &[(
                    1,
                    "at=info method=GET path=/ host=grafana.net fwd=\"124.133.124.161\" service=8ms status=200 size=2MB"
                )]
            )]),
        },
        Case {
            section: "log_queries: Line filter expression (or)",
            query: r#"{container="frontend"} |= "GET" or "all""#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!(null),
        },
        Case {
            section: "log_queries: Line filter expression (regex, unanchored)",
            query: r#"count_over_time({container="frontend"} |~ "status=5\\d\\d" [5m])"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([sample(
                json!({"container": "frontend", "detected_level": "unknown"}),
                60,
                "1"
            )]),
        },
        Case {
            section: "ip: Line filter expression",
            query: r#"count_over_time({container="frontend"} |= ip("10.0.0.0/8") [5m])"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([sample(
                json!({"container": "frontend", "detected_level": "unknown"}),
                60,
                "1"
            )]),
        },
        Case {
            section: "log_queries: Label filter expression (duration, bytes, or, and)",
            query: r#"{container="frontend"} | logfmt | service >= 1s or size > 1MB and status == 200 | line_format "{{.method}}""#,
            input: frontend.clone(),
            ask: Ask::Logs,
            want: json!([stream(
                json!({"at": "info", "container": "frontend", "detected_level": "info", "fwd": "124.133.124.161", "host": "grafana.net", "method": "GET", "path": "/", "service": "8ms", "size": "2MB", "status": "200"}),
                &[(1, "GET")]
            )]),
        },
        Case {
            section: "log_queries: logfmt (with parameters)",
            query: r#"{container="frontend"} | logfmt host, fwd_ip="fwd" | fwd_ip != """#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!(null),
        },
        Case {
            section: "log_queries: Drop Labels expression",
            query: r#"{job="varlogs"} | json | drop level, method="GET""#,
            input: access.clone(),
            ask: Ask::Logs,
            want: json!([
                stream(
                    json!({"detected_level": "info", "host": "grafana.net", "job": "varlogs", "path": "/", "status": "200"}),
                    &[(
                        1,
                        r#"{"level": "info", "method": "GET", "path": "/", "host": "grafana.net", "status": "200"}"#
                    )]
                ),
                stream(
                    json!({"detected_level": "info", "host": "grafana.net", "job": "varlogs", "method": "POST", "path": "/", "status": "200"}),
                    &[(
                        2,
                        r#"{"level": "info", "method": "POST", "path": "/", "host": "grafana.net", "status": "200"}"#
                    )]
                ),
            ]),
        },
        Case {
            section: "log_queries: Keep Labels expression",
            query: r#"{job="varlogs"} | json | keep level, method="GET""#,
            input: access.clone(),
            ask: Ask::Logs,
            want: json!([
                stream(
                    json!({"level": "info"}),
                    &[(
                        2,
                        r#"{"level": "info", "method": "POST", "path": "/", "host": "grafana.net", "status": "200"}"#
                    )]
                ),
                stream(
                    json!({"level": "info", "method": "GET"}),
                    &[(
                        1,
                        r#"{"level": "info", "method": "GET", "path": "/", "host": "grafana.net", "status": "200"}"#
                    )]
                ),
            ]),
        },
        Case {
            section: "log_queries: Drop Labels expression (__error__)",
            query: r#"{job="varlogs"} | json | drop __error__, __error_details__"#,
            input: vec![(
                vec![("job", "varlogs")],
                vec![(1, "INFO GET / loki.net 200")],
            )],
            ask: Ask::Logs,
            want: json!([stream(
                json!({"detected_level": "info", "job": "varlogs"}),
                &[(1, "INFO GET / loki.net 200")]
            )]),
        },
        Case {
            section: "log_queries: Pattern",
            query: r#"{job="nginx"} | pattern "<ip> - - <_> \"<method> <uri> <_>\" <status> <size> <_> \"<agent>\" <_>" | keep method, status"#,
            input: vec![(
                vec![("job", "nginx")],
                vec![(
                    1,
                    r#"0.191.12.2 - - [10/Jun/2021:09:14:29 +0000] "GET /api/plugins/versioncheck HTTP/1.1" 200 2 "-" "Go-http-client/2.0" "13.76.247.102, 34.120.177.193" "TLSv1.2" "US" """#,
                )],
            )],
            ask: Ask::Logs,
            want: json!([stream(
                json!({"method": "GET", "status": "200"}),
                &[(
                    1,
                    r#"0.191.12.2 - - [10/Jun/2021:09:14:29 +0000] "GET /api/plugins/versioncheck HTTP/1.1" 200 2 "-" "Go-http-client/2.0" "13.76.247.102, 34.120.177.193" "TLSv1.2" "US" """#
                )]
            )]),
        },
        Case {
            section: "log_queries: Regular expression",
            query: r#"{job="api"} | regexp "(?P<method>\\w+) (?P<path>[\\w|/]+) \\((?P<status>\\d+?)\\) (?P<duration>.*)" | line_format "{{.method}} {{.status}} {{.duration}}""#,
            input: vec![(
                vec![("job", "api")],
                vec![(1, "POST /api/prom/api/v1/query_range (200) 1.5s")],
            )],
            ask: Ask::Logs,
            want: json!([stream(
                json!({"detected_level": "unknown", "duration": "1.5s", "job": "api", "method": "POST", "path": "/api/prom/api/v1/query_range", "status": "200"}),
                &[(1, "POST 200 1.5s")]
            )]),
        },
        Case {
            section: "log_queries: unpack",
            query: r#"{job="packed"} | unpack"#,
            input: vec![(
                vec![("job", "packed")],
                vec![(
                    1,
                    r#"{"container":"myapp","pod":"pod-3223f","_entry":"original log message"}"#,
                )],
            )],
            ask: Ask::Logs,
            want: json!([stream(
                json!({"container": "myapp", "detected_level": "unknown", "job": "packed", "pod": "pod-3223f"}),
                &[(1, "original log message")]
            )]),
        },
        Case {
            section: "log_queries: JSON (with parameters)",
            query: r#"{job="j"} | json first_server="servers[0]", ua="request.headers[\"User-Agent\"]" | keep first_server, ua"#,
            input: vec![(
                vec![("job", "j")],
                vec![(
                    1,
                    r#"{"protocol":"HTTP/2.0","servers":["129.0.1.1","10.2.1.3"],"request":{"headers":{"Accept":"*/*","User-Agent":"curl/7.68.0"}}}"#,
                )],
            )],
            ask: Ask::Logs,
            want: json!([stream(
                json!({"first_server": "129.0.1.1", "ua": "curl/7.68.0"}),
                &[(
                    1,
                    r#"{"protocol":"HTTP/2.0","servers":["129.0.1.1","10.2.1.3"],"request":{"headers":{"Accept":"*/*","User-Agent":"curl/7.68.0"}}}"#
                )]
            )]),
        },
        Case {
            section: "log_queries: Labels format expression",
            query: r#"{job="varlogs"} | json | label_format verb=method, line="{{.path}}{{.status}}" | keep verb, line"#,
            input: vec![(access[0].0.clone(), vec![access[0].1[0]])],
            ask: Ask::Logs,
            want: json!([stream(
                json!({"line": "/200", "verb": "GET"}),
                &[(
                    1,
                    r#"{"level": "info", "method": "GET", "path": "/", "host": "grafana.net", "status": "200"}"#
                )]
            )]),
        },
        Case {
            section: "log_queries: Removing color codes",
            query: r#"{job="example"} | decolorize"#,
            input: vec![(
                vec![("job", "example")],
                vec![(1, "\u{1b}[32mok\u{1b}[0m done")],
            )],
            ask: Ask::Logs,
            want: json!([stream(
                json!({"detected_level": "unknown", "job": "example"}),
                &[(1, "ok done")]
            )]),
        },
        Case {
            section: "template_functions: Template pipeline syntax",
            query: r#"{job="varlogs"} | json | line_format `{{ .host | replace "." "_" | trunc 7 | upper }} {{ __line__ | count "info" }}`"#,
            input: vec![(access[0].0.clone(), vec![access[0].1[0]])],
            ask: Ask::Logs,
            want: json!(null),
        },
        Case {
            section: "metric_queries: Log range aggregations",
            query: r#"sum by (host) (rate({container="frontend"} |= "grafana" | logfmt | service > 1ms [1m]))"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([sample(
                json!({"host": "grafana.net"}),
                60,
                "0.03333333333333333"
            )]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations",
            query: r#"quantile_over_time(0.5, {container="frontend"} | logfmt | unwrap duration(service) | __error__="" [1m]) by (host)"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([sample(json!({"host": "grafana.net"}), 60, "0.754")]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations (bytes)",
            query: r#"sum(sum_over_time({container="frontend"} | logfmt | unwrap bytes(size) | __error__="" [1m]))"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([sample(json!({}), 60, "2012000")]),
        },
        Case {
            section: "metric_queries: pipeline errors fail a metric query",
            query: r#"count_over_time({container="frontend"} | logfmt --strict [1m])"#,
            input: frontend.clone(),
            ask: Ask::Refused("pipeline error: 'LogfmtParserErr'"),
            want: json!(null),
        },
        Case {
            section: "metric_queries: Offset modifier",
            query: r#"count_over_time({container="frontend"}[2s] offset 58s)"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([
                sample(
                    json!({"container": "frontend", "detected_level": "info"}),
                    60,
                    "1"
                ),
                sample(
                    json!({"container": "frontend", "detected_level": "unknown"}),
                    60,
                    "1"
                ),
            ]),
        },
        Case {
            section: "metric_queries: Built-in aggregation operators (topk, bottomk, sort)",
            query: r#"sort_desc(sum by (status) (count_over_time({container="frontend"} | logfmt | __error__="" [1m])))"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            // The third line is no logfmt: non-strict parsing finds nothing and no error.
            want: json!([
                sample(json!({}), 60, "1"),
                sample(json!({"status": "200"}), 60, "1"),
                sample(json!({"status": "503"}), 60, "1")
            ]),
        },
        Case {
            section: "metric_queries: Functions (vector)",
            query: r#"sum(count_over_time({container="traefik"}[5m])) or vector(0)"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([sample(json!({}), 60, "0")]),
        },
        Case {
            section: "metric_queries: absent_over_time",
            query: r#"absent_over_time({container="nope", job="x"}[1m])"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([sample(json!({"container": "nope", "job": "x"}), 60, "1")]),
        },
        Case {
            section: "query_reference: binary operators, division by zero",
            query: r#"sum(count_over_time({container="frontend"}[1m])) / 0"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([sample(json!({}), 60, "NaN")]),
        },
        Case {
            section: "query_reference: comparison with bool",
            query: r#"sum(count_over_time({container="frontend"}[1m])) > bool 5"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([sample(json!({}), 60, "0")]),
        },
        Case {
            section: "query_reference: vector matching (on, group_left)",
            query: r#"sum by (container, status) (count_over_time({container="frontend"} | logfmt | __error__="" [1m])) / on (container) group_left sum by (container) (count_over_time({container="frontend"}[1m]))"#,
            input: frontend.clone(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"container": "frontend"}), 60, "0.3333333333333333"),
                sample(
                    json!({"container": "frontend", "status": "200"}),
                    60,
                    "0.3333333333333333"
                ),
                sample(
                    json!({"container": "frontend", "status": "503"}),
                    60,
                    "0.3333333333333333"
                ),
            ]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations (avg_over_time, duration_seconds)",
            query: r#"avg_over_time({app="api"} | logfmt | unwrap duration_seconds(took) [1m]) by (pod)"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"pod": "a"}), 60, "2"),
                sample(json!({"pod": "b"}), 60, "1")
            ]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations (min_over_time, max_over_time)",
            query: r#"min_over_time({app="api"} | logfmt | unwrap duration(took) [1m]) by (app) + on (app) max_over_time({app="api"} | logfmt | unwrap duration(took) [1m]) by (app)"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([sample(json!({"app": "api"}), 60, "3.5")]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations (first_over_time, last_over_time)",
            query: r#"first_over_time({app="api"} | logfmt | unwrap duration(took) [1m]) by (pod) - last_over_time({app="api"} | logfmt | unwrap duration(took) [1m]) by (pod)"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"pod": "a"}), 60, "-1"),
                sample(json!({"pod": "b"}), 60, "-1")
            ]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations (stdvar_over_time)",
            query: r#"stdvar_over_time({app="api"} | logfmt | unwrap duration(took) [1m]) by (pod)"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"pod": "a"}), 60, "0.6666666666666666"),
                sample(json!({"pod": "b"}), 60, "0.25")
            ]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations (stddev_over_time)",
            query: r#"stddev_over_time({app="api"} | logfmt | unwrap duration(took) [1m]) by (pod)"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"pod": "a"}), 60, "0.816496580927726"),
                sample(json!({"pod": "b"}), 60, "0.5")
            ]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations (without)",
            query: r#"max_over_time({app="api"} | logfmt | unwrap duration(took) [1m]) without (level, size, n, detected_level)"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"app": "api", "pod": "a"}), 60, "3"),
                sample(json!({"app": "api", "pod": "b"}), 60, "1.5")
            ]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations (rate_counter)",
            query: r#"rate_counter({app="api", pod="a"} | logfmt n | drop detected_level | unwrap n [1m])"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([sample(json!({"app": "api", "pod": "a"}), 60, "0.4375")]),
        },
        Case {
            section: "metric_queries: Built-in aggregation operators (stdvar, stddev)",
            query: r#"stdvar(sum by (pod) (count_over_time({app="api"}[1m]))) + stddev(sum by (pod) (count_over_time({app="api"}[1m])))"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([sample(json!({}), 60, "0.75")]),
        },
        Case {
            section: "metric_queries: Built-in aggregation operators (bottomk)",
            query: r#"bottomk(1, sum by (pod) (count_over_time({app="api"}[1m])))"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([sample(json!({"pod": "b"}), 60, "2")]),
        },
        Case {
            section: "metric_queries: Built-in aggregation operators (sort)",
            query: r#"sort(sum by (pod) (count_over_time({app="api"}[1m])))"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"pod": "b"}), 60, "2"),
                sample(json!({"pod": "a"}), 60, "3")
            ]),
        },
        Case {
            section: "query_reference: label_replace",
            query: r#"label_replace(sum by (pod) (count_over_time({app="api"}[1m])), "p", "pod-$1", "pod", "(.*)")"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"p": "pod-a", "pod": "a"}), 60, "3"),
                sample(json!({"p": "pod-b", "pod": "b"}), 60, "2")
            ]),
        },
        Case {
            section: "query_reference: logical operators (and)",
            query: r#"sum by (pod) (count_over_time({app="api"}[1m])) and sum by (pod) (count_over_time({app="api"} |= "error" [1m]))"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([sample(json!({"pod": "a"}), 60, "3")]),
        },
        Case {
            section: "query_reference: logical operators (unless)",
            query: r#"sum by (pod) (count_over_time({app="api"}[1m])) unless sum by (pod) (count_over_time({app="api"} |= "error" [1m]))"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([sample(json!({"pod": "b"}), 60, "2")]),
        },
        Case {
            section: "query_reference: vector matching (ignoring)",
            query: r#"sum by (pod, app) (count_over_time({app="api"}[1m])) / ignoring (app) sum by (pod) (count_over_time({app="api"}[1m]))"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"pod": "a"}), 60, "1"),
                sample(json!({"pod": "b"}), 60, "1")
            ]),
        },
        Case {
            section: "query_reference: vector matching (group_right)",
            query: r#"sum by (app) (count_over_time({app="api"}[1m])) / on (app) group_right sum by (app, pod) (count_over_time({app="api"}[1m]))"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"app": "api", "pod": "a"}), 60, "1.6666666666666667"),
                sample(json!({"app": "api", "pod": "b"}), 60, "2.5")
            ]),
        },
        Case {
            section: "log_queries: Line filter expression (pattern |>)",
            query: r#"{app="api"} |> "took=<_> size=<_> n=<_> level=info""#,
            input: api(),
            ask: Ask::Logs,
            want: json!([
                stream(
                    json!({"app": "api", "detected_level": "info", "pod": "a"}),
                    &[
                        (1, "took=1s size=1KB n=10 level=info"),
                        (3, "took=2s size=3KB n=5 level=info")
                    ]
                ),
                stream(
                    json!({"app": "api", "detected_level": "info", "pod": "b"}),
                    &[(4, "took=1500ms size=1KB n=3 level=info")]
                ),
            ]),
        },
        Case {
            section: "log_queries: Line filter expression (pattern !>)",
            query: r#"{app="api"} !> "<_> level=info""#,
            input: api(),
            ask: Ask::Logs,
            want: json!([
                stream(
                    json!({"app": "api", "detected_level": "error", "pod": "a"}),
                    &[(2, "took=3s size=2KB n=20 level=error")]
                ),
                stream(
                    json!({"app": "api", "detected_level": "warn", "pod": "b"}),
                    &[(2, "took=500ms size=1KB n=1 level=warn")]
                ),
            ]),
        },
        Case {
            section: "log_queries: Line filter expression (or)",
            query: r#"sum(count_over_time({app="api"} |= "level=warn" or "level=error" [1m]))"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([sample(json!({}), 60, "2")]),
        },
        Case {
            section: "ip: Label filter expression",
            query: r#"{container="frontend"} | logfmt | fwd = ip("10.0.0.0/8") | keep method"#,
            input: frontend.clone(),
            ask: Ask::Logs,
            want: json!([stream(
                json!({"method": "POST"}),
                &[(
                    2,
                    "at=warn method=POST path=/api host=grafana.net fwd=\"10.0.0.1\" service=1.5s status=503 size=12kB"
                )]
            )]),
        },
        Case {
            section: "query_reference: comments and negative numbers in label filters",
            query: "sum by (pod) (count_over_time({app=\"api\"} # the API only\n | logfmt | n > -1 and n < 6 [1m]))",
            input: api(),
            ask: Ask::At(60),
            want: json!([
                sample(json!({"pod": "a"}), 60, "1"),
                sample(json!({"pod": "b"}), 60, "2")
            ]),
        },
        Case {
            section: "template_functions: printf, upper, duration, add",
            query: r#"{app="api", pod="b"} | logfmt | line_format `{{ .level | upper }} {{ printf "%.1f" (duration .took) }}s {{ add .n 1 }}` | keep pod"#,
            input: api(),
            ask: Ask::Logs,
            want: json!([stream(
                json!({"pod": "b"}),
                &[(2, "WARN 0.5s 2"), (4, "INFO 1.5s 4")]
            )]),
        },
        Case {
            section: "metric_queries: Unwrapped range aggregations (rate of unwrapped values)",
            query: r#"sum(rate({app="api"} | logfmt | unwrap bytes(size) [1m]))"#,
            input: api(),
            ask: Ask::At(60),
            want: json!([sample(json!({}), 60, "133.33333333333334")]),
        },
        Case {
            section: "log_queries: Parser expression (syntax errors are precise)",
            query: r#"{container="frontend"} | pattern "<a><b>""#,
            input: frontend.clone(),
            ask: Ask::Refused("consecutive captures"),
            want: json!(null),
        },
    ]
}

/// Streams in label order (the order of streams is not part of a case).
fn sorted(v: &Json) -> Vec<String> {
    let mut items: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(Json::to_string)
        .collect();
    items.sort();
    items
}

#[test]
fn documented_cases() {
    let mut failures = Vec::new();
    for case in cases() {
        let got = run(&case);
        match (&case.ask, got) {
            (Ask::Refused(want), Err(e)) if e.contains(want) => {}
            (Ask::Refused(want), other) => failures.push(format!(
                "{}: {}\n  want an error with {want:?}, got {other:?}",
                case.section, case.query
            )),
            (_, Err(e)) => failures.push(format!("{}: {}\n  error: {e}", case.section, case.query)),
            (_, Ok(got)) if case.want.is_null() => {
                // A case that states no exact answer must still answer.
                assert!(got.is_array(), "{}", case.section);
            }
            (Ask::Logs, Ok(got)) if sorted(&got) != sorted(&case.want) => {
                failures.push(format!(
                    "{}: {}\n  want {}\n  got  {}",
                    case.section, case.query, case.want, got
                ));
            }
            (Ask::At(_), Ok(got)) if got != case.want => {
                failures.push(format!(
                    "{}: {}\n  want {}\n  got  {}",
                    case.section, case.query, case.want, got
                ));
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
