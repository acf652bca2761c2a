//! Any query text: parsed, and when it parses, planned and evaluated over a
//! small store, with a deadline. Nothing may panic, overflow or hang.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use monitoring_rs::log_database::labels::Labels;
use monitoring_rs::log_database::query::Direction;
use monitoring_rs::log_database::{Config, Database, StreamEntries, WriteBatch};
use monitoring_rs::logql::metric::{Budget, Steps, evaluate};
use monitoring_rs::logql::{Expr, parse};

const S: i64 = 1_000_000_000;

static STORE: LazyLock<(tempfile::TempDir, Database)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), Config::default()).unwrap();
    let lines = [
        r#"{"level":"error","status":503,"took":"1.5s","msg":"upstream down","a":{"b":[1,2]}}"#,
        "level=info msg=\"hello world\" took=20ms size=2MB",
        "plain text line with GET /index.html 200",
        "\u{1b}[31mcolored\u{1b}[0m",
        "",
    ];
    let streams = ["web", "db"]
        .iter()
        .map(|app| {
            StreamEntries::with(
                Labels::new([("app", *app), ("namespace", "default")]),
                lines.iter().enumerate().map(|(i, l)| (i as i64 * S, l.as_bytes())),
            )
        })
        .collect();
    db.write(&WriteBatch {
        streams,
        checkpoints: vec![],
    })
    .unwrap();
    (dir, db)
});

fn budget() -> Budget {
    Budget {
        deadline: Instant::now() + Duration::from_millis(200),
        cancelled: Arc::default(),
        max_series: 100,
        memory: Default::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = parse(text) else {
        return;
    };
    let db = &STORE.1;
    match expr {
        Expr::Log(log) => {
            let (query, pipeline) = log.plan(0, 10 * S, Direction::Forward);
            if let Ok(entries) = db.query(query) {
                for entry in entries.take(100) {
                    let _ = pipeline.process(&entry.labels, entry.timestamp, &entry.line, entry.level);
                }
            }
        }
        Expr::Metric(metric) => {
            let steps = Steps {
                start: 0,
                step: S,
                count: 10,
            };
            let _ = evaluate(&metric, db, &steps, &budget());
        }
    }
});
