//! Grafana against the real binary: request by request, what Explore (log
//! query, log volume, label browser, query stats, log context, live tail)
//! and Logs Drilldown (service list, service page, levels, fields,
//! patterns, labels) send, with the parameters and headers they send
//! (grafana `public/app/plugins/datasource/loki`, `pkg/tsdb/loki`, the
//! Drilldown app), each answer read the way those clients read it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use testkit::daemon::{Daemon, DaemonCommand};

const SERVICE: &str = r#"{service_name="unknown_service"}"#;
const LINES: usize = 30;

fn lines() -> String {
    let mut out = String::new();
    for i in 0..LINES {
        out.push_str(&match i % 3 {
            0 => {
                format!(r#"{{"level":"info","status":200,"path":"/api/items/{i}","took":"{i}ms"}}"#)
            }
            1 => format!("level=error msg=\"upstream failed\" status=503 attempt={i}"),
            _ => format!("[WARN] cache miss for key item-{i}"),
        });
        out.push('\n');
    }
    out
}

struct Grafana {
    daemon: Daemon,
    client: reqwest::Client,
    start: String,
    end: String,
}

impl Grafana {
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.daemon.base()))
            // Grafana's Loki data source asks for label categories.
            .header("X-Loki-Response-Encoding-Flags", "categorize-labels")
            .query(params)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "{path} {params:?}: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    async fn range(&self, query: &str, extra: &[(&str, &str)]) -> Value {
        let mut params = vec![
            ("query", query),
            ("start", self.start.as_str()),
            ("end", self.end.as_str()),
        ];
        params.extend_from_slice(extra);
        self.get("/loki/api/v1/query_range", &params).await
    }
}

/// Every value of every stream of a streams answer: (ns, line, categories).
fn values(answer: &Value) -> Vec<(i64, String, Value)> {
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap().clone())
        .map(|v| {
            (
                v[0].as_str().unwrap().parse().unwrap(),
                v[1].as_str().unwrap().to_owned(),
                v.get(2).cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Sum of every sample of a matrix or vector answer, by a label's value.
fn totals(answer: &Value, label: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for series in answer["data"]["result"].as_array().unwrap() {
        let key = series["metric"][label].as_str().unwrap_or("").to_owned();
        let samples: Vec<Value> = match series.get("values") {
            Some(v) => v.as_array().unwrap().clone(),
            None => vec![series["value"].clone()],
        };
        let sum: f64 = samples
            .iter()
            .map(|p| p[1].as_str().unwrap().parse::<f64>().unwrap())
            .sum();
        *out.entry(key).or_insert(0.0) += sum;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_and_drilldown_work_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("app.log"), lines()).unwrap();
    let daemon = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args(["--log-collector", "directory", "--flush-interval", "100ms"])
        .flag("--root-path", &logs)
        .flag("--data-directory", dir.path().join("data"))
        .on(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)))
        .quiet()
        .start();
    let now = testkit::now_ns();
    let g = Grafana {
        daemon,
        client: reqwest::Client::new(),
        start: (now - 3_600_000_000_000).to_string(),
        end: (now + 3_600_000_000_000).to_string(),
    };
    // Wait for the collector to have read the file.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = g.range(SERVICE, &[("limit", "1000")]).await;
        if values(&got).len() == LINES {
            break;
        }
        assert!(Instant::now() < deadline, "lines never arrived: {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Explore, log query: categorised answer, detected_level per entry.
    let got = g
        .range(
            &format!(r#"{SERVICE} |= "status""#),
            &[
                ("direction", "backward"),
                ("limit", "1000"),
                ("step", "2000ms"),
            ],
        )
        .await;
    assert_eq!(got["data"]["encodingFlags"], json!(["categorize-labels"]));
    let stream = &got["data"]["result"][0]["stream"];
    assert_eq!(stream["service_name"], "unknown_service", "{got}");
    let levels: std::collections::BTreeSet<String> = values(&got)
        .iter()
        .map(|(_, _, c)| {
            c["structuredMetadata"]["detected_level"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(levels, ["error", "info"].map(String::from).into());

    // Explore, log volume: what Grafana sends for the histogram.
    let volume = g
        .range(
            &format!(
                "sum by (level, detected_level) (count_over_time({SERVICE} | drop __error__[1m]))"
            ),
            &[("step", "60000ms")],
        )
        .await;
    let by_level = totals(&volume, "detected_level");
    assert_eq!(by_level.get("info"), Some(&10.0), "{volume}");
    assert_eq!(by_level.get("error"), Some(&10.0));
    assert_eq!(by_level.get("warn"), Some(&10.0));

    // Explore, label browser and query stats.
    let labels = g
        .get(
            "/loki/api/v1/labels",
            &[("start", &g.start), ("end", &g.end)],
        )
        .await;
    assert!(
        labels["data"]
            .as_array()
            .unwrap()
            .contains(&json!("service_name"))
    );
    let values_of = g
        .get(
            "/loki/api/v1/label/service_name/values",
            &[("start", &g.start), ("end", &g.end)],
        )
        .await;
    assert_eq!(values_of["data"], json!(["unknown_service"]));
    let series = g
        .get(
            "/loki/api/v1/series",
            &[("match[]", SERVICE), ("start", &g.start), ("end", &g.end)],
        )
        .await;
    assert_eq!(series["data"].as_array().unwrap().len(), 1);
    let stats = g
        .get(
            "/loki/api/v1/index/stats",
            &[("query", SERVICE), ("start", &g.start), ("end", &g.end)],
        )
        .await;
    assert_eq!(stats["entries"], LINES, "{stats}");

    // Explore, log context: ten lines before a line, then after it; one
    // read stamped them all, yet paging by timestamp moves on.
    let all = values(
        &g.range(SERVICE, &[("limit", "1000"), ("direction", "forward")])
            .await,
    );
    let middle = all[15].0;
    let before = values(
        &g.range(
            SERVICE,
            &[
                ("limit", "10"),
                ("direction", "backward"),
                ("end", &middle.to_string()),
            ],
        )
        .await,
    );
    assert_eq!(before.len(), 10);
    assert!(before.iter().all(|(ts, _, _)| *ts < middle), "{before:?}");
    let after = values(
        &g.range(
            SERVICE,
            &[
                ("limit", "10"),
                ("direction", "forward"),
                ("start", &(middle + 1).to_string()),
            ],
        )
        .await,
    );
    assert_eq!(after.len(), 10);
    assert!(after.iter().all(|(ts, _, _)| *ts > middle));

    // Explore, live tail: the backfill, then a new line.
    let url = format!(
        "{}/loki/api/v1/tail?query={}&start={}",
        g.daemon.base().replace("http", "ws"),
        urlencode(SERVICE),
        g.start
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let frame: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    let backfill: usize = frame["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["values"].as_array().unwrap().len())
        .sum();
    assert_eq!(backfill, LINES);
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("app.log"))
        .unwrap()
        .write_all(b"level=info msg=\"live line\"\n")
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(next.to_text().unwrap().contains("live line"));
    drop(socket);

    // Drilldown, first: what this backend supports.
    let limits = g.get("/loki/api/v1/drilldown-limits", &[]).await;
    assert_eq!(limits["pattern_ingester_enabled"], true);
    assert_eq!(limits["limits"]["volume_enabled"], true);
    assert!(
        limits["limits"]["discover_service_name"]
            .as_array()
            .unwrap()
            .contains(&json!("app"))
    );

    // Explore, logs sample of a metric query: its selector as a log query.
    let sample = g
        .range(SERVICE, &[("limit", "20"), ("direction", "backward")])
        .await;
    assert_eq!(values(&sample).len(), 20);

    // Drilldown, service list: volume by service_name.
    let services = g
        .get(
            "/loki/api/v1/index/volume",
            &[
                ("query", r#"{service_name=~".+"}"#),
                ("start", &g.start),
                ("end", &g.end),
                ("limit", "5000"),
                ("targetLabels", "service_name"),
                ("aggregateBy", "series"),
            ],
        )
        .await;
    assert_eq!(
        services["data"]["result"][0]["metric"],
        json!({"service_name": "unknown_service"}),
        "{services}"
    );

    // Drilldown, service page: its labels, the level histogram, the log
    // list with its parsers, a level filter.
    let detected = g
        .get(
            "/loki/api/v1/detected_labels",
            &[("query", SERVICE), ("start", &g.start), ("end", &g.end)],
        )
        .await;
    assert!(
        detected["detectedLabels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["label"] == "path"),
        "{detected}"
    );
    let list = g
        .range(
            &format!("{SERVICE} | json | logfmt | drop __error__, __error_details__"),
            &[("limit", "100"), ("direction", "backward")],
        )
        .await;
    let parsed: Vec<Value> = values(&list)
        .into_iter()
        .map(|(_, _, c)| c["parsed"].clone())
        .collect();
    assert!(parsed.iter().any(|p| p["status"] == "503"), "{list}");
    // The stream has a `path` label (the file), so the JSON field is
    // path_extracted, as Loki names a clash.
    assert!(
        parsed.iter().any(|p| p["path_extracted"]
            .as_str()
            .is_some_and(|s| s.starts_with("/api/items/"))),
        "{list}"
    );
    let errors = g
        .range(
            &format!(r#"{SERVICE} | detected_level="error""#),
            &[("limit", "100")],
        )
        .await;
    assert_eq!(values(&errors).len(), 10);

    // Drilldown, fields: the fields, one field's values, its breakdown.
    let fields = g
        .get(
            "/loki/api/v1/detected_fields",
            &[("query", SERVICE), ("start", &g.start), ("end", &g.end)],
        )
        .await;
    let status = fields["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["label"] == "status")
        .cloned()
        .unwrap();
    assert_eq!(status["type"], "int");
    let parsers: Vec<&str> = status["parsers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(parsers, ["json", "logfmt"]);
    let values_of = g
        .get(
            "/loki/api/v1/detected_field/status/values",
            &[("query", SERVICE), ("start", &g.start), ("end", &g.end)],
        )
        .await;
    assert_eq!(values_of["values"], json!(["200", "503"]));
    let breakdown = g
        .range(
            &format!(
                r#"sum by (status) (count_over_time({SERVICE} | logfmt | json | drop __error__, __error_details__ | status!="" [1m]))"#
            ),
            &[("step", "60000ms")],
        )
        .await;
    let by_status = totals(&breakdown, "status");
    assert_eq!(by_status.get("200"), Some(&10.0), "{breakdown}");
    assert_eq!(by_status.get("503"), Some(&10.0));

    // Drilldown, patterns.
    let patterns = g
        .get(
            "/loki/api/v1/patterns",
            &[
                ("query", SERVICE),
                ("start", &g.start),
                ("end", &g.end),
                ("step", "60s"),
            ],
        )
        .await;
    let list = patterns["data"].as_array().unwrap();
    assert!(
        list.iter()
            .any(|p| p["level"] == "warn" && p["pattern"] == "[WARN] cache miss for key <_>"),
        "{patterns}"
    );
    g.daemon.terminate();
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
