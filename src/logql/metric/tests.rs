//! Metric evaluation over a real store.

use super::*;
use crate::log_database::{Config, StreamEntries, WriteBatch};
use crate::logql::{Expr, parse};

const S: i64 = 1_000_000_000;

fn db() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), Config::default()).unwrap();
    let mut batch = WriteBatch::default();
    for (level, times) in [("error", vec![1, 2, 2, 9]), ("info", vec![3, 4])] {
        batch.streams.push(StreamEntries::with(
            Labels::new([("app", "web"), ("level", level)]),
            times
                .into_iter()
                .map(|t| (t * S, format!("{level} line").into_bytes())),
        ));
    }
    db.write(&batch).unwrap();
    (dir, db)
}

fn eval(db: &Database, query: &str, steps: Steps) -> Value {
    try_eval(db, query, steps).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn points(v: &Value) -> Vec<(String, Vec<(u32, f64)>)> {
    let Value::Matrix(m) = v else { panic!("{v:?}") };
    m.iter()
        .map(|s| {
            (
                s.labels.to_string(),
                s.points.iter().map(|(k, v)| (*k, *v)).collect(),
            )
        })
        .collect()
}

#[test]
fn grafana_health_check_is_two() {
    let (_dir, db) = db();
    let one = Steps {
        start: S,
        step: S,
        count: 1,
    };
    assert_eq!(
        points(&eval(&db, "vector(1)+vector(1)", one)),
        vec![("{}".into(), vec![(0, 2.0)])]
    );
    assert_eq!(eval(&db, "1 + 2 * 3", one), Value::Scalar(7.0));
}

#[test]
fn count_over_time_windows_are_left_open() {
    let (_dir, db) = db();
    // Steps at 2s, 4s, 6s, 8s, 10s with 2s windows: (0,2] (2,4] ...
    let steps = Steps {
        start: 2 * S,
        step: 2 * S,
        count: 5,
    };
    let got = points(&eval(&db, r#"count_over_time({app="web"}[2s])"#, steps));
    assert_eq!(
        got,
        vec![
            (
                r#"{app="web", detected_level="error", level="error"}"#.into(),
                vec![(0, 3.0), (4, 1.0)]
            ),
            (
                r#"{app="web", detected_level="info", level="info"}"#.into(),
                vec![(1, 2.0)]
            ),
        ]
    );
    let volume = points(&eval(
        &db,
        r#"sum by (level) (count_over_time({app="web"}[2s]))"#,
        steps,
    ));
    assert_eq!(
        volume[0],
        (r#"{level="error"}"#.into(), vec![(0, 3.0), (4, 1.0)])
    );
    let total = points(&eval(
        &db,
        r#"sum(rate({app="web"}[10s]))"#,
        Steps {
            start: 10 * S,
            step: S,
            count: 1,
        },
    ));
    assert!((total[0].1[0].1 - 0.6).abs() < 1e-9, "{total:?}");
    let bytes = points(&eval(
        &db,
        r#"sum(bytes_over_time({app="web"} |= "info" [10s]))"#,
        Steps {
            start: 10 * S,
            step: S,
            count: 1,
        },
    ));
    assert_eq!(bytes, vec![("{}".into(), vec![(0, 18.0)])]);
}

#[test]
fn aggregations_and_arithmetic() {
    let (_dir, db) = db();
    let at10 = Steps {
        start: 10 * S,
        step: S,
        count: 1,
    };
    let q = |s: &str| points(&eval(&db, s, at10));
    assert_eq!(
        q(r#"count(count_over_time({app="web"}[10s]))"#),
        vec![("{}".into(), vec![(0, 2.0)])]
    );
    assert_eq!(
        q(r#"max(count_over_time({app="web"}[10s]))"#)[0].1,
        vec![(0, 4.0)]
    );
    assert_eq!(
        q(r#"min(count_over_time({app="web"}[10s]))"#)[0].1,
        vec![(0, 2.0)]
    );
    assert_eq!(
        q(r#"avg(count_over_time({app="web"}[10s]))"#)[0].1,
        vec![(0, 3.0)]
    );
    let top = q(r#"topk(1, count_over_time({app="web"}[10s]))"#);
    assert_eq!(
        top,
        vec![(
            r#"{app="web", detected_level="error", level="error"}"#.into(),
            vec![(0, 4.0)]
        )]
    );
    assert_eq!(
        q(r#"sum without (level, detected_level) (count_over_time({app="web"}[10s])) * 2"#),
        vec![(r#"{app="web"}"#.into(), vec![(0, 12.0)])]
    );
    assert_eq!(q(r#"count_over_time({app="web"}[10s]) > 3"#).len(), 1);
    let ratio = q(
        r#"sum by (app) (count_over_time({app="web"} |= "error" [10s])) / sum by (app) (count_over_time({app="web"}[10s]))"#,
    );
    assert!((ratio[0].1[0].1 - 4.0 / 6.0).abs() < 1e-9);
}

fn try_eval(db: &Database, query: &str, steps: Steps) -> Result<Value, EvalError> {
    let Expr::Metric(m) = parse(query).unwrap() else {
        panic!("{query} is not a metric query")
    };
    let budget = Budget {
        deadline: Instant::now() + std::time::Duration::from_secs(10),
        cancelled: Arc::default(),
        max_series: 100,
        memory: crate::memory::MemoryLimit::default(),
    };
    evaluate(&m, db, &steps, &budget)
}

fn latency_db() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), Config::default()).unwrap();
    let mut batch = WriteBatch::default();
    for (pod, lines) in [
        (
            "a",
            vec![
                (1, "took=1s n=10"),
                (2, "took=3s n=20"),
                (3, "took=bad n=5"),
                (4, "n=40"),
            ],
        ),
        ("b", vec![(2, "took=500ms n=1"), (5, "took=2s n=3")]),
    ] {
        batch.streams.push(StreamEntries::with(
            Labels::new([("app", "api"), ("pod", pod)]),
            lines
                .into_iter()
                .map(|(t, l)| (t * S, l.as_bytes().to_vec())),
        ));
    }
    db.write(&batch).unwrap();
    (dir, db)
}

#[test]
fn unwrapped_range_functions() {
    let (_dir, db) = latency_db();
    let at = |t: i64| Steps {
        start: t * S,
        step: S,
        count: 1,
    };
    let q = |s: &str| points(&eval(&db, s, at(10)));
    let base = r#"{app="api"} | logfmt | unwrap duration(took) | __error__="" [10s]"#;
    assert_eq!(
        q(&format!("sum(sum_over_time({base}))"))[0].1,
        vec![(0, 6.5)]
    );
    assert_eq!(
        q(&format!("max_over_time({base}) by (app)")),
        vec![(r#"{app="api"}"#.into(), vec![(0, 3.0)])]
    );
    assert_eq!(
        q(&format!("min_over_time({base}) by (pod)"))[1].1,
        vec![(0, 0.5)]
    );
    assert_eq!(
        q(&format!("first_over_time({base}) by (pod)"))[0].1,
        vec![(0, 1.0)]
    );
    assert_eq!(
        q(&format!("last_over_time({base}) by (pod)"))[1].1,
        vec![(0, 2.0)]
    );
    assert_eq!(
        q(&format!("avg_over_time({base}) by (pod)"))[0].1,
        vec![(0, 2.0)]
    );
    assert_eq!(
        q(&format!("stdvar_over_time({base}) by (pod)"))[0].1,
        vec![(0, 1.0)]
    );
    assert_eq!(
        q(&format!("stddev_over_time({base}) by (pod)"))[1].1,
        vec![(0, 0.75)]
    );
    assert_eq!(
        q(&format!("quantile_over_time(0.5, {base}) by (app)"))[0].1,
        vec![(0, 1.5)]
    );
    assert!((q(&format!("sum(rate({base}))"))[0].1[0].1 - 0.65).abs() < 1e-9);
    // The unwrapped label leaves the series; the others stay.
    assert_eq!(
        q(&format!("sum_over_time({base})"))[0].0,
        r#"{app="api", detected_level="unknown", n="1", pod="b"}"#
    );
    // Without the error filter, the bad value fails the query as in Loki.
    let e = try_eval(
        &db,
        r#"sum_over_time({app="api"} | logfmt | unwrap duration(took) [10s])"#,
        at(10),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("pipeline error: 'SampleExtractionErr'"),
        "{e}"
    );
    // Lines without the label are no samples (and no error).
    assert_eq!(
        q(r#"count_over_time({app="api"} | logfmt | took="" [10s])"#)[0].1,
        vec![(0, 1.0)]
    );
}

#[test]
fn rate_counter_and_absent() {
    let (_dir, db) = latency_db();
    let at = |t: i64, count: u32| Steps {
        start: t * S,
        step: S,
        count,
    };
    let v = points(&eval(
        &db,
        r#"rate_counter({app="api", pod="a"} | logfmt n | unwrap n [4s])"#,
        at(4, 1),
    ));
    // 10, 20, 5 (a reset), 40 over 3 s of samples in a 4 s window.
    assert!(v[0].1[0].1 > 0.0, "{v:?}");
    let absent = points(&eval(
        &db,
        r#"absent_over_time({app="api", pod="zzz"}[2s])"#,
        at(3, 1),
    ));
    assert_eq!(
        absent,
        vec![(r#"{app="api", pod="zzz"}"#.into(), vec![(0, 1.0)])]
    );
    assert!(points(&eval(&db, r#"absent_over_time({app="api"}[2s])"#, at(3, 1))).is_empty());
    // Offset moves the window back.
    let off = points(&eval(
        &db,
        r#"count_over_time({app="api", pod="b"}[1s] offset 3s)"#,
        at(5, 1),
    ));
    assert_eq!(off[0].1, vec![(0, 1.0)]);
}

#[test]
fn vector_operators_and_matching() {
    let (_dir, db) = db();
    let at10 = Steps {
        start: 10 * S,
        step: S,
        count: 1,
    };
    let q = |s: &str| points(&eval(&db, s, at10));
    let rate = r#"count_over_time({app="web"}[10s])"#;
    assert_eq!(
        q(&format!("bottomk(1, {rate})"))[0].0,
        r#"{app="web", detected_level="info", level="info"}"#
    );
    assert_eq!(
        q(&format!("sort_desc({rate})"))[0].0,
        r#"{app="web", detected_level="error", level="error"}"#
    );
    assert_eq!(
        q(&format!("sort({rate})"))[0].0,
        r#"{app="web", detected_level="info", level="info"}"#
    );
    assert_eq!(q(&format!("stddev({rate})"))[0].1, vec![(0, 1.0)]);
    assert_eq!(q(&format!("stdvar({rate})"))[0].1, vec![(0, 1.0)]);
    assert_eq!(q(&format!("{rate} > bool 3")).len(), 2);
    assert_eq!(q(&format!("{rate} > bool 3"))[1].1, vec![(0, 0.0)]);
    assert_eq!(q(&format!(r#"{rate} and {rate} > 3"#)).len(), 1);
    assert_eq!(q(&format!(r#"{rate} unless {rate} > 3"#)).len(), 1);
    assert_eq!(
        q(&format!(r#"sum({rate}) or vector(0)"#)),
        vec![("{}".into(), vec![(0, 6.0)])]
    );
    assert_eq!(
        q(r#"sum(count_over_time({app="none"}[10s])) or vector(0)"#),
        vec![("{}".into(), vec![(0, 0.0)])]
    );
    let ratio = q(&format!(
        r#"{rate} / on (app) group_left sum by (app) ({rate})"#
    ));
    assert_eq!(ratio.len(), 2, "{ratio:?}");
    assert!((ratio[0].1[0].1 - 4.0 / 6.0).abs() < 1e-9);
    let e = try_eval(
        &db,
        &format!(r#"{rate} / on (app) sum by (app, level) ({rate})"#),
        at10,
    )
    .unwrap_err();
    assert!(e.to_string().contains("many"), "{e}");
    let replaced = q(&format!(
        r#"label_replace({rate}, "short", "$1", "level", "(e|i).*")"#
    ));
    assert!(replaced[0].0.contains(r#"short="e""#), "{replaced:?}");
    assert!(matches!(eval(&db, "1 / 0", at10), Value::Scalar(v) if v.is_nan()));
    assert!(try_eval(&db, "1 > 2", at10).is_err());
    assert_eq!(eval(&db, "1 > bool 2", at10), Value::Scalar(0.0));
    // A metric over lines that failed to parse fails, unless filtered or grouped away.
    assert!(try_eval(&db, r#"count_over_time({app="web"} | json [10s])"#, at10).is_err());
    assert_eq!(
        q(r#"count_over_time({app="web"} | json | __error__="" [10s])"#).len(),
        0
    );
    assert_eq!(
        q(r#"sum by (app) (count_over_time({app="web"} | json [10s]))"#)[0].1,
        vec![(0, 6.0)]
    );
    assert_eq!(
        q(r#"count_over_time({app="web"} | json | drop __error__, __error_details__ [10s])"#).len(),
        2
    );
}

/// Streams spread over three stores, and the same streams in one: for
/// every query, evaluating each store's parts and combining them gives
/// what the single store gives.
#[test]
fn parts_of_three_stores_combine_into_the_one_store_answer() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let stores: Vec<Database> = dirs
        .iter()
        .map(|d| Database::open(d.path(), Config::default()).unwrap().0)
        .collect();
    let (nodes, all) = stores.split_at(3);
    let all = &all[0];
    for pod in 0..9u32 {
        let node = (pod % 3) as usize;
        let labels = Labels::new([
            ("app", if pod % 2 == 0 { "web" } else { "api" }.to_owned()),
            ("pod", format!("p{pod}")),
            ("node", format!("n{node}")),
        ]);
        let entries: Vec<(i64, Vec<u8>)> = (0..40u32)
            .map(|i| {
                let t = i64::from(i) * 7 * S + i64::from(pod) * 113_000_000;
                let level = ["info", "warn", "error"][((i + pod) % 3) as usize];
                let line = format!(
                    "level={level} latency={} status={}",
                    (i * pod) % 17,
                    200 + (i % 3) * 100
                );
                (t, line.into_bytes())
            })
            .collect();
        for db in [&nodes[node], all] {
            let mut batch = WriteBatch::default();
            batch
                .streams
                .push(StreamEntries::with(labels.clone(), entries.clone()));
            db.write(&batch).unwrap();
        }
    }
    // The same file on every host (the directory collector's
    // /var/log/syslog): one stream of one store, three streams of three.
    let syslog = Labels::new([("app", "sys"), ("path", "/var/log/syslog")]);
    let mut merged = Vec::new();
    for (n, db) in nodes.iter().enumerate() {
        let entries: Vec<(i64, Vec<u8>)> = (0..30i64)
            .map(|i| {
                let t = i * 9 * S + n as i64 * 311_000_000;
                (
                    t,
                    format!("latency={}", (i * 7 + n as i64 * 5) % 23).into_bytes(),
                )
            })
            .collect();
        merged.extend(entries.clone());
        let mut batch = WriteBatch::default();
        batch
            .streams
            .push(StreamEntries::with(syslog.clone(), entries));
        db.write(&batch).unwrap();
    }
    merged.sort();
    let mut batch = WriteBatch::default();
    batch
        .streams
        .push(StreamEntries::with(syslog.clone(), merged));
    all.write(&batch).unwrap();
    let steps = Steps {
        start: 30 * S,
        step: 20 * S,
        count: 12,
    };
    let budget = Budget {
        deadline: Instant::now() + std::time::Duration::from_secs(60),
        cancelled: Arc::new(AtomicBool::new(false)),
        max_series: 500,
        memory: crate::memory::MemoryLimit::default(),
    };
    for query in [
        r#"sum by (app) (count_over_time({app=~".+"}[1m]))"#,
        r#"sum(rate({app="web"} | logfmt | level="error" [1m]))"#,
        r#"topk(2, sum by (pod) (bytes_over_time({app=~".+"}[1m])))"#,
        r#"avg by (app) (count_over_time({app=~".+"}[30s]))"#,
        r#"count(count_over_time({app=~".+"}[1m]))"#,
        r#"quantile_over_time(0.9, {app=~".+"} | logfmt | unwrap latency [1m]) by (app)"#,
        r#"avg_over_time({app=~".+"} | logfmt | unwrap latency [1m]) by (status)"#,
        r#"stddev_over_time({app=~".+"} | logfmt | drop pod, node | unwrap latency [1m])"#,
        r#"first_over_time({app="api"} | logfmt | unwrap latency [1m]) by (app)"#,
        r#"max_over_time({app=~".+"} | logfmt | unwrap latency [1m]) by (level)"#,
        r#"min_over_time({app=~".+"} | logfmt | keep app, latency | unwrap latency [1m])"#,
        r#"quantile_over_time(0.5, {app="web"} | logfmt | unwrap latency [1m])"#,
        r#"sort_desc(sum by (level) (count_over_time({app=~".+"} | logfmt [1m])))"#,
        r#"sum by (app) (rate({app=~".+"}[1m])) / on (app) group_left sum by (app) (count_over_time({app=~".+"}[1m]))"#,
        r#"absent_over_time({app="web", pod="p0"}[10s])"#,
        r#"absent_over_time({app="nope"}[10s])"#,
        r#"count_over_time({app=~".+"} | logfmt | drop pod, node [1m]) > 2"#,
        r#"stdvar by (app) (rate({app=~".+"}[1m]))"#,
        r#"avg_over_time({app="sys"} | logfmt | unwrap latency [1m])"#,
        r#"quantile_over_time(0.75, {app=~".+"} | logfmt | unwrap latency [1m])"#,
        r#"last_over_time({app="sys"} | logfmt | unwrap latency [30s]) + count_over_time({app="sys"}[30s])"#,
    ] {
        let Ok(Expr::Metric(expr)) = parse(query) else {
            panic!("{query}")
        };
        let one = evaluate(&expr, all, &steps, &budget).unwrap();
        // As the answering node does: series first, samples for a leaf
        // whose series came from more than one node.
        let parts: Vec<Vec<leaves::Part>> = leaves::leaves(&expr)
            .iter()
            .map(|leaf| {
                let ask = |samples| {
                    nodes
                        .iter()
                        .map(|db| leaves::part(leaf, db, &steps, &budget, samples).unwrap())
                        .collect::<Vec<_>>()
                };
                let series = ask(false);
                if leaves::spans_nodes(leaf, &series) {
                    ask(true)
                } else {
                    series
                }
            })
            .collect();
        let split = leaves::evaluate_parts(&expr, parts, &steps, &budget).unwrap();
        assert_close(query, &one, &split);
    }
}

/// Equal but for floating-point summation order.
fn assert_close(query: &str, a: &Value, b: &Value) {
    let (Value::Matrix(a), Value::Matrix(b)) = (a, b) else {
        assert_eq!(a, b, "{query}");
        return;
    };
    assert_eq!(
        a.iter().map(|s| &s.labels).collect::<Vec<_>>(),
        b.iter().map(|s| &s.labels).collect::<Vec<_>>(),
        "{query}"
    );
    assert!(
        !a.is_empty() || query.contains("nope") || query.contains("p0"),
        "{query} is empty"
    );
    for (x, y) in a.iter().zip(b) {
        assert_eq!(
            x.points.keys().collect::<Vec<_>>(),
            y.points.keys().collect::<Vec<_>>(),
            "{query} {}",
            x.labels
        );
        for (v, w) in x.points.values().zip(y.points.values()) {
            assert!(
                (v - w).abs() <= 1e-9 * v.abs().max(1.0) || (v.is_nan() && w.is_nan()),
                "{query} {}: {v} vs {w}",
                x.labels
            );
        }
    }
}
