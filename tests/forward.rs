//! Forwarding from the store: the real binary sends to receivers in this
//! process that decode with the official generated types (OTLP's
//! `ExportLogsServiceRequest`, Loki's `PushRequest` behind snappy), and
//! every line must arrive with its labels, attributes and time, in order
//! per stream — also through faults: a receiver down, 429 with
//! Retry-After, a batch refused with 400, the daemon SIGKILLed while
//! delivering, a receiver slower than the input.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use monitoring_rs::forward::loki::proto::PushRequest;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use testkit::daemon::{Daemon, DaemonCommand};

/// One line as a receiver got it: its stream (labels or resource
/// attributes, sorted), time, body, and everything else said about it.
#[derive(Clone, Debug, PartialEq)]
struct Got {
    stream: String,
    ts: i64,
    line: String,
    extra: BTreeMap<String, String>,
}

/// What a receiver answers next: a script, then 200.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    RetryAfter(u64),
    Slow(u64),
}

#[derive(Default)]
struct Inner {
    got: Vec<Got>,
    requests: Vec<(Instant, u16)>,
    script: VecDeque<Answer>,
    headers: Vec<HeaderMap>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Inner>>);

impl Receiver {
    fn lines(&self) -> Vec<Got> {
        self.0.lock().unwrap().got.clone()
    }

    fn script(&self, answers: &[Answer]) {
        self.0
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().copied());
    }

    fn requests(&self) -> Vec<(Instant, u16)> {
        self.0.lock().unwrap().requests.clone()
    }
}

fn decode_otlp(headers: &HeaderMap, body: &[u8]) -> Vec<Got> {
    let raw = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        body.to_vec()
    };
    let request = ExportLogsServiceRequest::decode(raw.as_slice()).unwrap();
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
        .as_ref()
        .and_then(|v| v.value.clone())
    {
        Some(any_value::Value::StringValue(s)) => s,
        other => format!("{other:?}"),
    };
    let mut out = Vec::new();
    for resource in request.resource_logs {
        let mut attributes: Vec<String> = resource
            .resource
            .unwrap_or_default()
            .attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, text(&kv.value)))
            .collect();
        attributes.sort();
        for scope in resource.scope_logs {
            for record in scope.log_records {
                let mut extra: BTreeMap<String, String> = record
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(&kv.value)))
                    .collect();
                extra.insert("severity".into(), record.severity_text.clone());
                extra.insert(
                    "observed_after_time".into(),
                    (record.observed_time_unix_nano >= record.time_unix_nano).to_string(),
                );
                out.push(Got {
                    stream: attributes.join(","),
                    ts: record.time_unix_nano as i64,
                    line: text(&record.body),
                    extra,
                });
            }
        }
    }
    out
}

fn decode_loki(body: &[u8]) -> Vec<Got> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
    let request = PushRequest::decode(raw.as_slice()).unwrap();
    let mut out = Vec::new();
    for stream in request.streams {
        for entry in stream.entries {
            let ts = entry.timestamp.unwrap_or_default();
            out.push(Got {
                stream: stream.labels.clone(),
                ts: ts.seconds * 1_000_000_000 + i64::from(ts.nanos),
                line: entry.line,
                extra: entry
                    .structured_metadata
                    .iter()
                    .map(|m| (m.name.clone(), m.value.clone()))
                    .collect(),
            });
        }
    }
    out
}

async fn take(
    State((receiver, otlp)): State<(Receiver, bool)>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let answer = receiver.0.lock().unwrap().script.pop_front();
    if let Some(Answer::Slow(ms)) = answer {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = match answer {
        Some(Answer::Status(code)) => code,
        Some(Answer::RetryAfter(_)) => 429,
        _ => 200,
    };
    let mut inner = receiver.0.lock().unwrap();
    inner.requests.push((Instant::now(), status));
    inner.headers.push(headers.clone());
    if status == 200 {
        let got = if otlp {
            decode_otlp(&headers, &body)
        } else {
            decode_loki(&body)
        };
        inner.got.extend(got);
    }
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(Answer::RetryAfter(seconds)) = answer {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}

/// A receiver on `ip`, OTLP (`/v1/logs`) or Loki (`/loki/api/v1/push`).
fn receiver(ip: Ipv4Addr, otlp: bool) -> (Receiver, SocketAddr, std::thread::JoinHandle<()>) {
    let received = Receiver::default();
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/logs", axum::routing::post(take))
        .route("/loki/api/v1/push", axum::routing::post(take))
        .with_state((received.clone(), otlp));
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, app).await;
        });
    });
    (received, address, thread)
}

fn daemon(ip: Ipv4Addr, logs: &Path, data: &Path, flags: &[String]) -> Daemon {
    DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args(["--log-collector", "directory", "--flush-interval", "200ms"])
        .args([
            "--forward-batch-wait",
            "200ms",
            "--forward-batch-size",
            "4KiB",
        ])
        .args(flags)
        .flag("--root-path", logs)
        .flag("--data-directory", data)
        .on(IpAddr::V4(ip))
        .quiet()
        .start()
}

fn write_lines(path: &Path, from: usize, count: usize) {
    let mut text = String::new();
    for i in from..from + count {
        let level = ["info", "warn", "error"][i % 3];
        text.push_str(&format!("level={level} seq={i} msg=\"request {i} done\"\n"));
    }
    testkit::append(path, &text);
}

fn wait_for(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `seq` numbers of `path`'s lines as received, in order.
fn seqs(got: &[Got], file: &str) -> Vec<usize> {
    got.iter()
        .filter(|g| g.stream.contains(file))
        .filter_map(|g| {
            g.line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("seq="))
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

fn status(daemon: &Daemon) -> serde_json::Value {
    serde_json::from_str(&daemon.get("/status").unwrap().1).unwrap()
}

#[test]
fn both_sinks_deliver_every_line_with_its_labels_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 30);
    let (otlp, otlp_at, _o) = receiver(ip, true);
    let (loki, loki_at, _l) = receiver(ip, false);
    let daemon = daemon(
        ip,
        &logs,
        &dir.path().join("data"),
        &[
            format!("--otlp-endpoint=http://{otlp_at}"),
            format!("--loki-push-url=http://{loki_at}/loki/api/v1/push"),
            "--loki-tenant-id=team-a".into(),
            "--loki-labels=cluster=test".into(),
        ],
    );
    write_lines(&logs.join("web.log"), 0, 300);
    write_lines(&logs.join("worker.log"), 0, 200);
    wait_for("every line at both receivers", 30, || {
        otlp.lines().len() >= 500 && loki.lines().len() >= 500
    });
    let (o, l) = (otlp.lines(), loki.lines());
    assert_eq!(seqs(&o, "web.log"), (0..300).collect::<Vec<_>>());
    assert_eq!(seqs(&o, "worker.log"), (0..200).collect::<Vec<_>>());
    assert_eq!(seqs(&l, "web.log"), (0..300).collect::<Vec<_>>());
    assert_eq!(seqs(&l, "worker.log"), (0..200).collect::<Vec<_>>());
    // OTLP: the resource names the file and service; severity and times.
    let first = &o[0];
    assert!(first.stream.contains("log.file.path="), "{first:?}");
    assert!(first.stream.contains("service.name="), "{first:?}");
    let warn = o.iter().find(|g| g.line.contains("seq=1 ")).unwrap();
    assert_eq!(warn.extra["severity"], "WARN");
    assert_eq!(warn.extra["observed_after_time"], "true");
    // Loki: the labels as stream labels, the extra label, the tenant.
    assert!(
        l[0].stream.starts_with("{cluster=\"test\", path="),
        "{}",
        l[0].stream
    );
    let headers = loki.0.lock().unwrap().headers[0].clone();
    assert_eq!(headers["x-scope-orgid"], "team-a");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    // The same times as the store's.
    let stored: serde_json::Value = serde_json::from_str(
        &daemon
            .get("/loki/api/v1/query_range?query=%7Bpath%3D~%22.%2Bweb.log%22%7D%20%7C%3D%20%22seq%3D0%20%22&limit=5&start=0")
            .unwrap()
            .1,
    )
    .unwrap();
    let ts: i64 = stored["data"]["result"][0]["values"][0][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let sent = o.iter().find(|g| g.stream.contains("web.log")).unwrap();
    assert_eq!(sent.ts, ts, "{sent:?} {stored}");
    let s = status(&daemon);
    let sinks = s["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 2);
    assert_eq!(sinks[0]["sent_entries"], 500, "{sinks:?}");
    assert_eq!(sinks[0]["rejected_entries"], 0);
    let (_, metrics) = daemon.get("/metrics").unwrap();
    assert!(
        metrics.contains("monitoring_rs_forward_sent_entries_total{sink=\"loki\"} 500"),
        "{metrics}"
    );
    assert!(daemon.terminate().success());
}

#[test]
fn faults_lose_nothing_but_what_the_receiver_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let data = dir.path().join("data");
    let ip = Ipv4Addr::new(127, 0, 0, 31);
    let (otlp, at, _t) = receiver(ip, true);
    let flags = [
        format!("--otlp-endpoint=http://{at}"),
        "--otlp-compression=none".into(),
    ];
    // Down (503) for a while, then 429 with Retry-After: 2.
    otlp.script(&[
        Answer::Status(503),
        Answer::Status(503),
        Answer::Status(503),
        Answer::RetryAfter(2),
    ]);
    let mut daemon = daemon(ip, &logs, &data, &flags);
    write_lines(&logs.join("app.log"), 0, 100);
    wait_for("the first hundred", 30, || otlp.lines().len() >= 100);
    let requests = otlp.requests();
    let limited = requests.iter().position(|(_, s)| *s == 429).unwrap();
    let waited = requests[limited + 1].0 - requests[limited].0;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After ignored: {waited:?}"
    );
    assert_eq!(seqs(&otlp.lines(), "app.log"), (0..100).collect::<Vec<_>>());
    let s = status(&daemon);
    assert!(s["sinks"][0]["retries"].as_u64().unwrap() >= 4, "{s}");

    // One batch refused with 400: counted, the rest delivered.
    otlp.script(&[Answer::Status(400)]);
    write_lines(&logs.join("app.log"), 100, 20);
    std::thread::sleep(Duration::from_millis(800));
    write_lines(&logs.join("app.log"), 120, 30);
    wait_for("the lines after the refused batch", 30, || {
        seqs(&otlp.lines(), "app.log").contains(&149)
    });
    let s = status(&daemon);
    let rejected = s["sinks"][0]["rejected_entries"].as_u64().unwrap();
    assert!(rejected > 0 && rejected <= 20, "{s}");
    let got = seqs(&otlp.lines(), "app.log");
    assert_eq!(got.len() as u64 + rejected, 150, "{s}");

    // SIGKILL while delivering to a slow receiver: resumes from the
    // cursor; every line arrives, repeats bounded by what one flush
    // interval and the batch in flight hold.
    otlp.script(&[Answer::Slow(1500); 3]);
    write_lines(&logs.join("app.log"), 150, 200);
    std::thread::sleep(Duration::from_millis(700));
    daemon.kill();
    daemon = self::daemon(ip, &logs, &data, &flags);
    wait_for("every line after the kill", 40, || {
        let got = seqs(&otlp.lines(), "app.log");
        (150..350).all(|n| got.contains(&n))
    });
    let got = seqs(&otlp.lines(), "app.log");
    let after: Vec<usize> = got.iter().copied().filter(|n| *n >= 150).collect();
    let repeats = after.len() - 200;
    assert!(repeats <= 200, "{repeats} repeats");

    // A receiver slower than the input: the sink lags, collection does not.
    otlp.script(&[Answer::Slow(2000); 4]);
    write_lines(&logs.join("busy.log"), 0, 2000);
    wait_for("the store has every line at once", 10, || {
        let (_, body) = daemon
            .get("/loki/api/v1/index/stats?query=%7Bpath%3D~%22.%2Bbusy.log%22%7D&start=0")
            .unwrap();
        body.contains("\"entries\":2000")
    });
    let s = status(&daemon);
    assert!(s["sinks"][0]["lag_seconds"].as_f64().unwrap() > 0.0, "{s}");
    let behind = s["sinks"][0]["lag_entries"].as_u64().unwrap();
    assert!(behind > 0 && behind <= 2000, "{s}");
    assert!(
        seqs(&otlp.lines(), "busy.log").len() < 2000,
        "the receiver kept up after all"
    );
    wait_for("the slow receiver catches up", 60, || {
        seqs(&otlp.lines(), "busy.log").len() >= 2000
    });
    assert_eq!(
        seqs(&otlp.lines(), "busy.log"),
        (0..2000).collect::<Vec<_>>()
    );
    wait_for("the sink shows no lag", 10, || {
        status(&daemon)["sinks"][0]["lag_entries"].as_u64() == Some(0)
    });
    let (_, metrics) = daemon.get("/metrics").unwrap();
    for name in [
        "monitoring_rs_forward_lag_entries{sink=\"otlp\"} 0",
        "monitoring_rs_forward_lost_entries_total{sink=\"otlp\"} 0",
        "monitoring_rs_forward_rejected_entries_total{sink=\"otlp\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(daemon.terminate().success());
}

/// A sink over a store in this process (the library, as the daemon runs it).
fn sink_over(
    db: &Arc<monitoring_rs::log_database::Database>,
    at: SocketAddr,
    from: i64,
    batch_bytes: usize,
) -> (
    Arc<monitoring_rs::forward::SinkStatus>,
    monitoring_rs::shutdown::Shutdown,
    Vec<std::thread::JoinHandle<()>>,
) {
    let stop = monitoring_rs::shutdown::Shutdown::new();
    let config = monitoring_rs::forward::SinkConfig {
        name: "otlp".into(),
        format: monitoring_rs::forward::Format::Otlp { gzip: true },
        endpoint: monitoring_rs::forward::Endpoint {
            url: format!("http://{at}/v1/logs").parse().unwrap(),
            headers: Vec::new(),
            timeout: Duration::from_secs(5),
            ca_file: None,
        },
        batch_bytes,
        batch_wait: Duration::from_millis(100),
        from,
    };
    let (statuses, threads) =
        monitoring_rs::forward::start(db.clone(), vec![config], stop.clone()).unwrap();
    (statuses[0].clone(), stop, threads)
}

/// Entries `hours_ago` hours old, one stream per `name`.
fn old_store(dir: &Path, hours_ago: i64) -> Arc<monitoring_rs::log_database::Database> {
    use monitoring_rs::log_database::labels::Labels;
    use monitoring_rs::log_database::{Config, Database, StreamEntries, WriteBatch};
    let config = Config {
        retention_period: Duration::from_secs(3600),
        ..Config::default()
    };
    let db = Arc::new(Database::open(dir, config).unwrap().0);
    let start = monitoring_rs::log_database::now_ns() - hours_ago * 3_600_000_000_000;
    for name in ["a.log", "b.log"] {
        db.write(&WriteBatch {
            streams: vec![StreamEntries::with(
                Labels::new([("path", format!("/var/log/{name}"))]),
                (0..50).map(|i| {
                    (
                        start + i * 1_000_000,
                        format!("level=info seq={i}").into_bytes(),
                    )
                }),
            )],
            checkpoints: vec![],
        })
        .unwrap();
    }
    db.flush().unwrap();
    db
}

#[test]
fn forward_from_back_fills_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let db = old_store(dir.path(), 2);
    let ip = Ipv4Addr::new(127, 0, 0, 32);
    let (otlp, at, _t) = receiver(ip, true);
    // From now: the old entries stay home.
    let (status, stop, threads) =
        sink_over(&db, at, monitoring_rs::log_database::now_ns(), 64 << 10);
    std::thread::sleep(Duration::from_millis(800));
    assert!(otlp.lines().is_empty());
    stop.trigger();
    threads.into_iter().for_each(|t| t.join().unwrap());
    drop(status);
    // A new sink from three hours back sends both streams whole, in order.
    let (otlp, at, _t) = receiver(ip, true);
    let dir = tempfile::tempdir().unwrap();
    let db = old_store(dir.path(), 2);
    let from = monitoring_rs::log_database::now_ns() - 3 * 3_600_000_000_000;
    let (status, stop, threads) = sink_over(&db, at, from, 64 << 10);
    wait_for("the back-fill", 20, || otlp.lines().len() >= 100);
    assert_eq!(seqs(&otlp.lines(), "a.log"), (0..50).collect::<Vec<_>>());
    assert_eq!(seqs(&otlp.lines(), "b.log"), (0..50).collect::<Vec<_>>());
    assert_eq!(
        status
            .sent_entries
            .load(std::sync::atomic::Ordering::Relaxed),
        100
    );
    stop.trigger();
    threads.into_iter().for_each(|t| t.join().unwrap());
}

#[test]
fn entries_retention_deletes_before_they_are_sent_are_counted_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = old_store(dir.path(), 2);
    let ip = Ipv4Addr::new(127, 0, 0, 33);
    let (otlp, at, _t) = receiver(ip, true);
    // The receiver is down for good: nothing of the old hour goes out.
    otlp.script(&[Answer::Status(503); 1000]);
    let from = monitoring_rs::log_database::now_ns() - 3 * 3_600_000_000_000;
    // Small batches: one is in hand, retried; the rest is still unread.
    let (status, stop, threads) = sink_over(&db, at, from, 200);
    wait_for("a try", 10, || !otlp.requests().is_empty());
    // Retention (one hour) deletes the two-hour-old partition.
    assert_eq!(db.enforce_retention().unwrap(), 1);
    let held = status
        .pending_entries
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(held > 0 && held < 100, "{held}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lost = status
            .lost_entries
            .load(std::sync::atomic::Ordering::Relaxed);
        if lost == 100 - held {
            break;
        }
        assert!(Instant::now() < deadline, "lost {lost}, held {held}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.trigger();
    threads.into_iter().for_each(|t| t.join().unwrap());
}
