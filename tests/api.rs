//! The HTTP API against a real server on 127.0.0.1:0 over a filled store,
//! called with a real HTTP client: status codes and exact JSON shapes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use monitoring_rs::api::{self, ApiConfig, AppState};
use monitoring_rs::log_database::labels::Labels;
use monitoring_rs::log_database::{Config, Database, StreamEntries, WriteBatch};
use monitoring_rs::memory::MemoryLimit;
use monitoring_rs::shutdown::Shutdown;
use serde_json::{Value, json};

const S: i64 = 1_000_000_000;
/// The store's first entry time: a day ago on the hour, so the data is
/// always inside retention.
static T0: std::sync::LazyLock<i64> = std::sync::LazyLock::new(testkit::a_day_ago_on_the_hour);

/// `T0 + seconds` as RFC 3339, as a client would type it.
fn rfc3339(seconds: f64) -> String {
    let t =
        std::time::UNIX_EPOCH + Duration::from_nanos(*T0 as u64) + Duration::from_secs_f64(seconds);
    humantime::format_rfc3339(t).to_string()
}

struct Server {
    base: String,
    db: Arc<Database>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Shutdown,
}

fn entries(labels: Labels, lines: &[(i64, &str)]) -> StreamEntries {
    StreamEntries::with(labels, lines.iter().map(|(t, l)| (*T0 + t * S, *l)))
}

async fn server() -> Server {
    server_with(ApiConfig::default()).await
}

async fn server_with(config: ApiConfig) -> Server {
    server_with_memory(config, MemoryLimit::default()).await
}

async fn server_with_memory(config: ApiConfig, memory: MemoryLimit) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), Config::default()).unwrap();
    let db = Arc::new(db);
    db.write(&WriteBatch {
        streams: vec![
            entries(
                Labels::new([
                    ("namespace", "default"),
                    ("pod_name", "web-1"),
                    ("app", "web"),
                ]),
                &[
                    (1, r#"{"level":"info","status":200,"msg":"GET /"}"#),
                    (2, r#"{"level":"error","status":503,"msg":"upstream down"}"#),
                    (4, r#"{"level":"info","status":200,"msg":"GET /healthz"}"#),
                ],
            ),
            entries(
                Labels::new([
                    ("namespace", "default"),
                    ("pod_name", "db-0"),
                    ("app", "db"),
                ]),
                &[
                    (3, "level=warn msg=\"slow query\" took=1.5s"),
                    (5, "level=info msg=checkpoint took=20ms"),
                ],
            ),
            entries(
                Labels::new([
                    ("namespace", "kube-system"),
                    ("pod_name", "dns"),
                    ("app", "dns"),
                ]),
                &[(6, "dns ready")],
            ),
        ],
        checkpoints: vec![],
    })
    .unwrap();
    db.flush().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = Shutdown::new();
    let state = AppState {
        shutdown: stop.clone(),
        memory,
        ..AppState::with_config(db.clone(), config)
    };
    let stopped = stop.clone();
    tokio::spawn(api::serve(listener, state, async move {
        stopped.wait().await;
    }));
    Server {
        base,
        db,
        client: reqwest::Client::new(),
        _dir: dir,
        stop,
    }
}

impl Server {
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn json(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let (status, body) = self.get(path, query).await;
        assert_eq!(status, 200, "{path} {query:?}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn write(&self, labels: Labels, line: &str) {
        self.db
            .write(&WriteBatch {
                streams: vec![StreamEntries::with(
                    labels,
                    vec![(
                        monitoring_rs::log_database::now_ns(),
                        line.as_bytes().to_vec(),
                    )],
                )],
                checkpoints: vec![],
            })
            .unwrap();
    }
}

/// `T0 + seconds` as the epoch seconds a client sends.
fn secs(seconds: i64) -> &'static str {
    Box::leak((*T0 / S + seconds).to_string().into_boxed_str())
}

/// From the first entry on.
fn all() -> (&'static str, &'static str) {
    ("start", secs(0))
}

/// Well after the last entry.
fn end() -> (&'static str, &'static str) {
    ("end", secs(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_routes() {
    let s = server().await;
    assert_eq!(s.get("/ready", &[]).await, (200, "ready\n".into()));
    let lines = s.json("/logs/namespace/default", &[]).await;
    assert_eq!(lines.as_array().unwrap().len(), 5);
    assert_eq!(
        lines[0], r#"{"level":"info","status":200,"msg":"GET /"}"#,
        "oldest first"
    );
    assert_eq!(
        s.json("/logs/app/web", &[("contains", "error")])
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.json("/logs/app/db", &[("regex", "took=[0-9.]+s")])
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let newest = s.json("/logs/namespace/default", &[("limit", "2")]).await;
    assert_eq!(
        newest,
        json!([
            r#"{"level":"info","status":200,"msg":"GET /healthz"}"#,
            "level=info msg=checkpoint took=20ms"
        ])
    );
    let oldest = s
        .json(
            "/logs/namespace/default",
            &[("limit", "1"), ("direction", "forward")],
        )
        .await;
    assert_eq!(oldest[0], r#"{"level":"info","status":200,"msg":"GET /"}"#);
    let (status, ndjson) = s.get("/logs/app/dns", &[("format", "ndjson")]).await;
    assert_eq!(status, 200);
    let row: Value = serde_json::from_str(ndjson.lines().next().unwrap()).unwrap();
    assert_eq!(
        row,
        json!({"timestamp": (*T0 + 6 * S).to_string(), "labels": {"app": "dns", "detected_level": "unknown", "namespace": "kube-system", "pod_name": "dns"}, "line": "dns ready"})
    );
    assert_eq!(
        s.get("/logs/app/dns", &[("format", "text")]).await,
        (200, "dns ready\n".into())
    );
    // Values may hold slashes (the directory collector's `path`).
    s.write(Labels::new([("path", "/var/log/app.log")]), "from a file");
    assert_eq!(s.json("/logs/path/var/log/app.log", &[]).await, json!([]));
    assert_eq!(
        s.json("/logs/path//var/log/app.log", &[]).await,
        json!(["from a file"])
    );

    // Client mistakes: 4xx with a message saying what to fix.
    for (path, query, status, says) in [
        ("/logs/color/blue", vec![], 404, "unknown label"),
        (
            "/logs/app/web",
            vec![("regex", "(")],
            400,
            "invalid regular expression",
        ),
        (
            "/logs/app/web",
            vec![("limit", "100000")],
            400,
            "over the maximum",
        ),
        (
            "/logs/app/web",
            vec![("start", "20"), ("end", "10")],
            400,
            "after its end",
        ),
        (
            "/logs/app/web",
            vec![("start", "yesterday")],
            400,
            "RFC 3339",
        ),
        (
            "/logs/app/web",
            vec![("format", "xml")],
            400,
            "use json, ndjson or text",
        ),
        ("/logs/app.x/web", vec![], 400, "not a label name"),
        ("/nowhere", vec![], 404, "no such route"),
        ("/loki/api/v1/no_such_thing", vec![], 404, "no such route"),
    ] {
        let (got, body) = s.get(path, &query).await;
        assert_eq!(got, status, "{path} {query:?}: {body}");
        assert!(body.contains(says), "{path} {query:?}: {body}");
    }
    let status = s.json("/status", &[]).await;
    assert_eq!(status["store"]["streams"], 4);
    assert_eq!(status["labels"]["namespace"], 2);
    assert!(status["collector"]["lag_bytes"].is_number());
    s.stop.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_log_queries_have_lokis_shapes() {
    let s = server().await;
    let got = s
        .json(
            "/loki/api/v1/query_range",
            &[("query", r#"{app="dns"}"#), all(), end()],
        )
        .await;
    assert_eq!(
        got,
        json!({"status": "success", "data": {"resultType": "streams", "result": [
            {"stream": {"app": "dns", "detected_level": "unknown", "namespace": "kube-system", "pod_name": "dns"}, "values": [[(*T0 + 6 * S).to_string(), "dns ready"]]}
        ], "stats": {}}})
    );
    // Grafana asks for label categories: the stream keeps its own labels,
    // each value carries its structured metadata and parsed labels.
    let got: Value = s
        .client
        .get(format!("{}/loki/api/v1/query_range", s.base))
        .header("X-Loki-Response-Encoding-Flags", "categorize-labels")
        .query(&[
            ("query", r#"{app="web"} | json | status >= 500"#),
            all(),
            end(),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got["data"]["encodingFlags"],
        json!(["categorize-labels"]),
        "{got}"
    );
    let stream = &got["data"]["result"][0];
    assert_eq!(
        stream["stream"],
        json!({"app": "web", "namespace": "default", "pod_name": "web-1"})
    );
    assert_eq!(
        stream["values"][0][2],
        json!({"structuredMetadata": {"detected_level": "error"},
               "parsed": {"level": "error", "msg": "upstream down", "status": "503"}}),
        "{got}"
    );
    // start=0: the range counts from the oldest entry held, so "everything"
    // is allowed whatever --max-query-range says.
    let got = s
        .json(
            "/loki/api/v1/query_range",
            &[("query", r#"{app="dns"}"#), ("start", "0"), end()],
        )
        .await;
    assert_eq!(
        got["data"]["result"][0]["values"][0][1], "dns ready",
        "{got}"
    );
    // Backward by default, newest first within a stream; limit is global.
    let got = s
        .json(
            "/loki/api/v1/query_range",
            &[
                ("query", r#"{namespace="default"}"#),
                all(),
                end(),
                ("limit", "3"),
            ],
        )
        .await;
    let result = got["data"]["result"].as_array().unwrap();
    let count: usize = result
        .iter()
        .map(|s| s["values"].as_array().unwrap().len())
        .sum();
    assert_eq!(count, 3);
    let web = result.iter().find(|s| s["stream"]["app"] == "web").unwrap();
    assert_eq!(web["values"][0][0], (*T0 + 4 * S).to_string());
    // The pipeline: json parser, label filter, line_format; the native /query too.
    for path in ["/loki/api/v1/query_range", "/query"] {
        let got = s
            .json(path, &[("query", r#"{app="web"} | json | status >= 500 | line_format "{{.level}}: {{.msg}}""#), all(), end()])
            .await;
        let result = &got["data"]["result"];
        assert_eq!(result.as_array().unwrap().len(), 1, "{got}");
        assert_eq!(result[0]["values"][0][1], "error: upstream down");
        assert_eq!(result[0]["stream"]["status"], "503");
    }
    let got = s
        .json(
            "/loki/api/v1/query_range",
            &[
                ("query", r#"{app="db"} | logfmt | took > 1s"#),
                all(),
                end(),
            ],
        )
        .await;
    assert_eq!(
        got["data"]["result"][0]["values"].as_array().unwrap().len(),
        1
    );
    // Timestamps as RFC 3339 and as float seconds.
    let got = s
        .json(
            "/loki/api/v1/query_range",
            &[
                ("query", r#"{app="web"}"#),
                ("start", &rfc3339(2.0)),
                ("end", &format!("{}.5", *T0 / S + 3)),
            ],
        )
        .await;
    assert_eq!(
        got["data"]["result"][0]["values"].as_array().unwrap().len(),
        1
    );

    let (status, body) = s
        .get(
            "/loki/api/v1/query_range",
            &[("query", r#"{namespace="default", app "web"}"#)],
        )
        .await;
    assert_eq!(
        (status, body.trim()),
        (
            400,
            "parse error at 1:27: expected '=', '!=', '=~' or '!~', found string \"web\""
        )
    );
    let (status, body) = s
        .get(
            "/loki/api/v1/query_range",
            &[(
                "query",
                r#"quantile_over_time(0.9, {app="web"} | unwrap x [1m])"#,
            )],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""resultType":"matrix""#), "{body}");
    let (status, body) = s
        .get("/loki/api/v1/query_range", &[("query", r#"{app=~".*"}"#)])
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.get("/loki/api/v1/query_range", &[]).await;
    assert!(
        status == 400 && body.contains("query parameter is required"),
        "{body}"
    );
    s.stop.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_metric_queries() {
    let s = server().await;
    // The data source's "Save & test".
    let got = s
        .json(
            "/loki/api/v1/query",
            &[("query", "vector(1)+vector(1)"), ("time", "4")],
        )
        .await;
    assert_eq!(
        got,
        json!({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [4.0, "2"]}], "stats": {}}})
    );
    let got = s
        .json("/loki/api/v1/query", &[("query", "1+1"), ("time", "4")])
        .await;
    assert_eq!(got["data"]["resultType"], "scalar");
    // Explore's log-volume histogram.
    let got = s
        .json(
            "/loki/api/v1/query_range",
            &[
                (
                    "query",
                    r#"sum by (level) (count_over_time({namespace="default"} | json [10s]))"#,
                ),
                ("start", secs(10)),
                ("end", secs(10)),
                ("step", "10s"),
            ],
        )
        .await;
    assert_eq!(got["data"]["resultType"], "matrix");
    let result = got["data"]["result"].as_array().unwrap();
    let info = result
        .iter()
        .find(|s| s["metric"]["level"] == "info")
        .unwrap();
    assert_eq!(info["values"], json!([[(*T0 / S + 10) as f64, "2"]]));
    let got = s
        .json(
            "/loki/api/v1/query",
            &[
                (
                    "query",
                    r#"topk(1, sum by (app) (count_over_time({namespace="default"}[1h])))"#,
                ),
                ("time", secs(10)),
            ],
        )
        .await;
    assert_eq!(
        got["data"]["result"],
        json!([{"metric": {"app": "web"}, "value": [(*T0 / S + 10) as f64, "3"]}])
    );
    let (status, body) = s
        .get(
            "/loki/api/v1/query_range",
            &[
                ("query", r#"count_over_time({app="web"}[1m])"#),
                ("since", "30d"),
                ("end", secs(10)),
                ("step", "1s"),
            ],
        )
        .await;
    assert!(status == 400 && body.contains("increase step"), "{body}");
    s.stop.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_series_and_index() {
    let s = server().await;
    let names = s.json("/loki/api/v1/labels", &[all(), end()]).await;
    assert_eq!(
        names,
        json!({"status": "success", "data": ["app", "namespace", "pod_name"]})
    );
    let values = s
        .json(
            "/loki/api/v1/label/app/values",
            &[all(), end(), ("query", r#"{namespace="default"}"#)],
        )
        .await;
    assert_eq!(values["data"], json!(["db", "web"]));
    let series = s
        .json(
            "/loki/api/v1/series",
            &[
                ("match[]", r#"{app="dns"}"#),
                ("match[]", r#"{app="db"}"#),
                all(),
                end(),
            ],
        )
        .await;
    assert_eq!(
        series["data"],
        json!([{"app": "db", "namespace": "default", "pod_name": "db-0"}, {"app": "dns", "namespace": "kube-system", "pod_name": "dns"}])
    );
    // POST as a form, as Grafana does.
    let response = s
        .client
        .post(format!("{}/loki/api/v1/series", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "match%5B%5D=%7Bapp%3D%22dns%22%7D&start={}&end={}",
            all().1,
            end().1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let (status, _) = s.get("/loki/api/v1/series", &[]).await;
    assert_eq!(status, 400);
    let stats = s
        .json(
            "/loki/api/v1/index/stats",
            &[("query", r#"{namespace="default"}"#), all(), end()],
        )
        .await;
    assert_eq!(
        stats,
        json!({"streams": 2, "chunks": 1, "entries": 5, "bytes": stats["bytes"].clone()})
    );
    assert!(stats["bytes"].as_u64().unwrap() > 100);
    let volume = s
        .json(
            "/loki/api/v1/index/volume",
            &[("query", r#"{namespace=~".+"}"#), all(), end()],
        )
        .await;
    assert_eq!(volume["data"]["resultType"], "vector");
    assert_eq!(
        volume["data"]["result"].as_array().unwrap().len(),
        2,
        "{volume}"
    );
    let volume = s
        .json(
            "/loki/api/v1/index/volume_range",
            &[
                ("query", r#"{namespace="default"}"#),
                ("targetLabels", "app"),
                all(),
                end(),
                ("step", "50s"),
            ],
        )
        .await;
    assert_eq!(volume["data"]["resultType"], "matrix");
    // aggregateBy=labels: one volume per label name, named with an empty
    // value, as Loki answers.
    let volume = s
        .json(
            "/loki/api/v1/index/volume",
            &[
                ("query", r#"{namespace="default"}"#),
                ("aggregateBy", "labels"),
                all(),
                end(),
            ],
        )
        .await;
    let mut names: Vec<Value> = volume["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"].clone())
        .collect();
    names.sort_by_key(|m| m.to_string());
    assert_eq!(
        names,
        [
            json!({"app": ""}),
            json!({"namespace": ""}),
            json!({"pod_name": ""})
        ],
        "{volume}"
    );
    let (status, body) = s
        .get(
            "/loki/api/v1/index/volume",
            &[
                ("query", r#"{namespace="default"}"#),
                ("aggregateBy", "pods"),
            ],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let info = s.json("/loki/api/v1/status/buildinfo", &[]).await;
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let (_, metrics) = s.get("/metrics", &[]).await;
    for name in [
        "monitoring_rs_http_requests_total",
        "monitoring_rs_http_request_duration_seconds",
        "monitoring_rs_store_stored_bytes",
        "monitoring_rs_lines_ingested_total",
        "monitoring_rs_tail_subscribers",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    s.stop.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_delivers_new_lines_within_100ms() {
    let s = server().await;
    let response = s
        .client
        .get(format!("{}/logs/app/live", s.base))
        .query(&[("follow", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut latencies = Vec::new();
    for i in 0..5 {
        // Wait until the request is subscribed, then time each line.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let written = Instant::now();
        s.write(Labels::new([("app", "live")]), &format!("line {i}"));
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got.extend_from_slice(&chunk);
        }
        latencies.push(written.elapsed());
        let row: Value = serde_json::from_slice(got.trim_ascii()).unwrap();
        assert_eq!(row["line"], format!("line {i}"));
    }
    latencies.sort();
    assert!(
        latencies[2] < Duration::from_millis(100),
        "median {:?}",
        latencies[2]
    );
    // Shutdown ends the response cleanly.
    s.stop.trigger();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the follow response did not end at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_tail_websocket() {
    let s = server().await;
    let url = format!(
        "{}/loki/api/v1/tail?query=%7Bapp%3D%22web%22%7D&start={}",
        s.base.replace("http", "ws"),
        secs(0)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // Backfill first: the stored web lines, oldest first.
    let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let backfill: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    // Split by detected_level, as Loki shows structured metadata.
    let lines: usize = backfill["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["values"].as_array().unwrap().len())
        .sum();
    assert_eq!(lines, 3, "{backfill}");
    s.write(
        Labels::new([
            ("app", "web"),
            ("namespace", "default"),
            ("pod_name", "web-1"),
        ]),
        "live line",
    );
    s.write(Labels::new([("app", "other")]), "not for this tail");
    let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let live: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(live["streams"][0]["values"][0][1], "live line");
    assert_eq!(live["streams"][0]["stream"]["app"], "web");
    socket.close(None).await.unwrap();
    s.stop.trigger();
}

/// Deeply nested queries in every nestable construct: refused with a 4xx
/// that says why, near the limit evaluated, and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_refused_and_the_server_stays_up() {
    let s = server().await;
    let range = r#"count_over_time({app="web"}[1m])"#;
    let shapes = |n: usize| {
        vec![
            format!("{}{range}{}", "(".repeat(n), ")".repeat(n)),
            format!("{}{range}{}", "sum(".repeat(n), ")".repeat(n)),
            format!("{range}{}", " + 1".repeat(n)),
            format!(
                r#"{{app="web"}} | json | {}level="error"{}"#,
                "(".repeat(n),
                ")".repeat(n)
            ),
            format!(
                r#"{{app="web"}} | json | level="error"{}"#,
                r#" or level="warn""#.repeat(n)
            ),
        ]
    };
    for n in [2_000, 20_000, 100_000] {
        for q in shapes(n) {
            // Long queries go in a form body, as Grafana sends them.
            let sent = s
                .client
                .post(format!("{}/loki/api/v1/query_range", s.base))
                .form(&[("query", q.as_str()), all(), end()])
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                // The server may answer 413 and close before the client has
                // sent the whole body; the client then sees a reset.
                Err(e) if q.len() > 1 << 20 => {
                    assert!(e.is_request() || e.is_body() || e.is_connect(), "{e}");
                    continue;
                }
                Err(e) => panic!("{n}: {e}"),
            };
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            if q.len() > 1 << 20 {
                assert_eq!(status, 413, "{n}: over the 1 MiB body limit: {body}");
                continue;
            }
            assert_eq!(status, 400, "{n}: {body}");
            assert!(body.contains("nests more than 100 levels"), "{body}");
        }
    }
    // The 6 KB URL of the report, as a GET, on a new connection: the
    // server closes those it answered 413 before the body was read, and a
    // pooled one may be closing just as it is reused.
    let q = format!("{}{range}{}", "(".repeat(2_000), ")".repeat(2_000));
    let response = reqwest::Client::new()
        .get(format!("{}/loki/api/v1/query", s.base))
        .query(&[("query", q.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // Just under the limit: evaluated.
    for q in shapes(45) {
        s.json("/loki/api/v1/query_range", &[("query", &q), all(), end()])
            .await;
    }
    assert_eq!(s.get("/ready", &[]).await, (200, "ready\n".into()));
    s.stop.trigger();
}

/// Idle sockets and a slowloris client are cut at the header deadline, so
/// a thousand of them cannot keep the API from answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_cannot_starve_the_api() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server_with(ApiConfig {
        max_connections: 64,
        header_read_timeout: Duration::from_millis(300),
        ..ApiConfig::default()
    })
    .await;
    let address = s.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1_000 {
        idle.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // A slowloris client: a header byte every 100 ms, never finishing.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    let trickle = tokio::spawn(async move {
        slow.write_all(b"GET /ready HTTP/1.1\r\n").await.ok()?;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            slow.write_all(b"X").await.ok()?;
        }
        Some(())
    });
    // A real client still gets its answer, once idle slots are cut.
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(30), s.get("/ready", &[])).await;
    assert_eq!(answer.unwrap(), (200, "ready\n".into()));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(trickle.await.unwrap(), None, "the slow client was cut off");
    // The first idle sockets were accepted and then closed by the server.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    s.stop.trigger();
}

/// Past --max-tails, a follow or tail gets 429, and a slot frees when a
/// client goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_and_tail_clients_are_capped() {
    let s = server_with(ApiConfig {
        max_tails: 1,
        ..ApiConfig::default()
    })
    .await;
    let follow = |s: &Server| {
        s.client
            .get(format!("{}/logs/app/web", s.base))
            .query(&[("follow", "true")])
            .send()
    };
    let first = follow(&s).await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let second = follow(&s).await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    assert!(second.text().await.unwrap().contains("--max-tails"));
    let url = format!(
        "{}/loki/api/v1/tail?query=%7Bapp%3D%22web%22%7D",
        s.base.replace("http", "ws")
    );
    assert!(tokio_tungstenite::connect_async(&url).await.is_err());
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = follow(&s).await.unwrap();
        if again.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = s.get("/metrics", &[]).await.1;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"monitoring_rs_http_requests_refused_total{reason="max_tails"} "#)
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no refused count: {metrics}"));
    // The two refused above, plus any retries while the slot was freed.
    assert!(refused >= 2, "{refused}");
    s.stop.trigger();
}

/// Past its memory ceiling the daemon takes no new query (503 that says
/// why) but stays up and ready; the refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_memory_limit_queries_get_503_and_the_daemon_stays_up() {
    let s = server_with_memory(
        ApiConfig::default(),
        MemoryLimit {
            limit: Some(1 << 20),
        },
    )
    .await;
    let (status, body) = s
        .get(
            "/loki/api/v1/query_range",
            &[("query", r#"{app="web"}"#), all(), end()],
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("memory limit"), "{body}");
    let (status, _) = s.get("/logs/app/web", &[]).await;
    assert_eq!(status, 503);
    assert_eq!(s.get("/ready", &[]).await, (200, "ready\n".into()));
    let metrics = s.get("/metrics", &[]).await.1;
    assert!(
        metrics.contains(r#"monitoring_rs_http_requests_refused_total{reason="memory"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("monitoring_rs_memory_limit_bytes 1048576"),
        "{metrics}"
    );
    s.stop.trigger();
}

/// What Logs Drilldown asks about labels and fields, answered in Loki's
/// shapes (no envelope).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drilldown_labels_and_fields() {
    let s = server().await;
    let got = s
        .json(
            "/loki/api/v1/detected_labels",
            &[("query", r#"{namespace="default"}"#), all(), end()],
        )
        .await;
    assert_eq!(
        got,
        json!({"detectedLabels": [
            {"label": "app", "cardinality": 2},
            {"label": "namespace", "cardinality": 1},
            {"label": "pod_name", "cardinality": 2},
        ]})
    );
    let got = s
        .json(
            "/loki/api/v1/detected_fields",
            &[("query", r#"{app="web"}"#), all(), end()],
        )
        .await;
    let fields = got["fields"].as_array().unwrap();
    let field = |name: &str| fields.iter().find(|f| f["label"] == name).cloned();
    assert_eq!(
        field("status"),
        Some(
            json!({"label": "status", "type": "int", "cardinality": 2, "parsers": ["json"], "jsonPath": ["status"]})
        ),
        "{got}"
    );
    assert_eq!(field("msg").unwrap()["type"], "string");
    assert_eq!(
        field("detected_level"),
        Some(
            json!({"label": "detected_level", "type": "string", "cardinality": 2, "parsers": null})
        ),
        "structured metadata has no parser: {got}"
    );
    assert_eq!(got["limit"], 1000);
    let got = s
        .json(
            "/loki/api/v1/detected_fields",
            &[("query", r#"{app="db"}"#), all(), end()],
        )
        .await;
    let took = got["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["label"] == "took")
        .cloned()
        .unwrap();
    assert_eq!(took["type"], "duration");
    assert_eq!(took["parsers"], json!(["logfmt"]));
    let got = s
        .json(
            "/loki/api/v1/detected_field/status/values",
            &[("query", r#"{app="web"}"#), all(), end()],
        )
        .await;
    assert_eq!(got, json!({"values": ["200", "503"], "limit": 1000}));
    // Patterns: the two info lines of web share a shape.
    let got = s
        .json(
            "/loki/api/v1/patterns",
            &[("query", r#"{app="web"}"#), all(), end(), ("step", "3600")],
        )
        .await;
    assert_eq!(got["status"], "success");
    let patterns = got["data"].as_array().unwrap();
    let info = patterns.iter().find(|p| p["level"] == "info").unwrap();
    assert_eq!(
        info["pattern"], r#"{"level":"info","status":200,"msg":"GET <_>"#,
        "{got}"
    );
    let total: u64 = info["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2, "{got}");
    assert!(patterns.iter().any(|p| p["level"] == "error"), "{got}");
    s.stop.trigger();
}
