//! Pipeline stages on single entries.

use super::*;
use crate::log_database::level::Level;
use crate::logql::{Expr, parse};

fn run(query: &str, line: &str) -> Option<(String, String)> {
    let Expr::Log(log) = parse(query).unwrap() else {
        panic!()
    };
    let (_, pipeline) = log.plan(0, 1, Direction::Forward);
    let labels = Arc::new(Labels::new([("app", "web"), ("level", "stream-level")]));
    pipeline
        .process(&labels, 0, line.as_bytes(), Level::Unknown)
        .map(|p| {
            (
                p.labels.to_string(),
                String::from_utf8(p.line.into_owned()).unwrap(),
            )
        })
}

#[test]
fn json_extracts_flattened_labels_and_filters() {
    let line = r#"{"level":"error","status":503,"http":{"path":"/x"},"tags":[1,2],"ok":true}"#;
    let (labels, _) = run(r#"{app="web"} | json | status >= 500"#, line).unwrap();
    assert!(labels.contains(r#"http_path="/x""#), "{labels}");
    assert!(
        labels.contains(r#"level_extracted="error""#),
        "a clash gets _extracted: {labels}"
    );
    assert!(labels.contains(r#"ok="true""#));
    assert!(!labels.contains("tags"));
    assert!(run(r#"{app="web"} | json | status < 500"#, line).is_none());
    let (labels, _) = run(r#"{app="web"} | json"#, "not json").unwrap();
    assert!(labels.contains(r#"__error__="JSONParserErr""#));
    assert!(run(r#"{app="web"} | json | __error__="""#, "not json").is_none());
}

#[test]
fn json_nested_past_the_parsers_limit_is_a_parse_error_not_a_crash() {
    for depth in [200, 100_000] {
        let line = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let (labels, _) = run(r#"{app="web"} | json"#, &line).unwrap();
        assert!(labels.contains(r#"__error__="JSONParserErr""#), "{depth}");
    }
    // Within serde_json's 128 levels: flattened.
    let line = format!("{}1{}", r#"{"a":"#.repeat(100), "}".repeat(100));
    let (labels, _) = run(r#"{app="web"} | json"#, &line).unwrap();
    assert!(labels.contains(&format!("{}=\"1\"", vec!["a"; 100].join("_"))));
}

#[test]
fn logfmt_durations_sizes_and_line_format() {
    let line = r#"ts=1 msg="hello \"you\"" took=250ms size=2MB flag"#;
    let (labels, out) = run(r#"{app="web"} | logfmt | took > 100ms and size >= 1MB | line_format "{{.msg}} in {{ .took }}""#, line).unwrap();
    assert_eq!(out, r#"hello "you" in 250ms"#);
    assert!(labels.contains(r#"took="250ms""#));
    assert!(run(r#"{app="web"} | logfmt | took > 1s"#, line).is_none());
    assert!(
        run(
            r#"{app="web"} | logfmt | took > 1s or msg=~"hello.*""#,
            line
        )
        .is_some()
    );
    // A value that does not convert keeps the line, marked.
    let (labels, _) = run(r#"{app="web"} | logfmt | msg > 5"#, line).unwrap();
    assert!(labels.contains("LabelFilterErr"));
}

#[test]
fn leading_line_filters_go_to_the_store() {
    let Expr::Log(log) = parse(r#"{app="web"} |= "a" != "b" | json |= "c""#).unwrap() else {
        panic!()
    };
    let (query, pipeline) = log.plan(0, 10, Direction::Backward);
    assert_eq!(query.filters.len(), 2);
    assert_eq!(pipeline.stages.len(), 2);
}

fn labels_of(query: &str, line: &str) -> String {
    run(query, line)
        .map(|(l, _)| l)
        .unwrap_or_else(|| "dropped".into())
}

fn line_of(query: &str, line: &str) -> String {
    run(query, line)
        .map(|(_, l)| l)
        .unwrap_or_else(|| "dropped".into())
}

#[test]
fn loki_semantics_of_label_filters() {
    // A numeric filter drops a line without the label (a JSON error line).
    assert_eq!(
        labels_of(r#"{app="web"} | json | status >= 400"#, "not json"),
        "dropped"
    );
    // `__error__` compared as a number never holds.
    assert_eq!(
        labels_of(r#"{app="web"} | json | __error__ > 0"#, "not json"),
        "dropped"
    );
    // Go durations have no days: `1d` does not convert.
    assert!(labels_of(r#"{app="web"} | logfmt | took > 1s"#, "took=1d").contains("LabelFilterErr"));
    assert!(labels_of(r#"{app="web"} | logfmt | size > 1PB"#, "size=2PB").contains("size=\"2PB\""));
    assert!(labels_of(r#"{app="web"} | logfmt | size > 1TB"#, "size=1PiB").contains("size="));
    assert_eq!(
        labels_of(r#"{app="web"} | logfmt | count > -1"#, "count=-2"),
        "dropped"
    );
    assert_ne!(
        labels_of(r#"{app="web"} | logfmt | count > -1"#, "count=0"),
        "dropped"
    );
    // ip() in a label filter.
    assert_ne!(
        labels_of(
            r#"{app="web"} | logfmt | addr = ip("10.0.0.0/8")"#,
            "addr=10.1.2.3"
        ),
        "dropped"
    );
    assert_eq!(
        labels_of(
            r#"{app="web"} | logfmt | addr = ip("10.0.0.0/8")"#,
            "addr=11.1.2.3"
        ),
        "dropped"
    );
}

#[test]
fn json_duplicate_keys_and_named_paths() {
    assert!(
        labels_of(r#"{app="web"} | json"#, r#"{"a":"first","a":"second"}"#)
            .contains(r#"a="first""#)
    );
    let doc = r#"{"servers":["129.0.1.1","10.2.1.3"],"request":{"headers":{"User-Agent":"curl/7.68.0","Accept":"*/*"}}}"#;
    let got = labels_of(
        r#"{app="web"} | json first_server="servers[0]", ua="request.headers[\"User-Agent\"]", servers"#,
        doc,
    );
    assert!(got.contains(r#"first_server="129.0.1.1""#), "{got}");
    assert!(got.contains(r#"ua="curl/7.68.0""#), "{got}");
    assert!(
        got.contains(r#"servers="[\"129.0.1.1\",\"10.2.1.3\"]""#),
        "{got}"
    );
    let got = labels_of(
        r#"{app="web"} | json"#,
        r#"{"a.b":{"c":"d"},"e":"f","1x":"g","n":null}"#,
    );
    assert!(
        got.contains(r#"a_b_c="d""#) && got.contains(r#"_1x="g""#) && !got.contains("n="),
        "{got}"
    );
}

#[test]
fn logfmt_modes() {
    let line = r#"at=info method=GET path=/ host=grafana.net fwd="124.133.124.161" service=8ms status=200"#;
    let got = labels_of(r#"{app="web"} | logfmt host, fwd_ip="fwd""#, line);
    assert!(
        got.contains(r#"host="grafana.net""#) && got.contains(r#"fwd_ip="124.133.124.161""#),
        "{got}"
    );
    assert!(!got.contains("method"), "{got}");
    // Non-strict: a bad pair is skipped, the rest is read, no error.
    let got = labels_of(
        r#"{app="web"} | logfmt"#,
        r#"a=1 =x b=2 c=d=e fo"o=bar g=3 h="open"#,
    );
    assert!(
        got.contains(r#"a="1""#) && got.contains(r#"b="2""#) && got.contains(r#"g="3""#),
        "{got}"
    );
    assert!(!got.contains("__error__"), "{got}");
    // Strict: stops with an error, keeping what came before.
    let got = labels_of(r#"{app="web"} | logfmt --strict"#, "a=1 =x b=2");
    assert!(
        got.contains("LogfmtParserErr") && got.contains(r#"a="1""#) && !got.contains(r#"b="2""#),
        "{got}"
    );
    // Standalone keys only with --keep-empty (empty labels are not shown).
    assert!(!labels_of(r#"{app="web"} | logfmt --keep-empty"#, "flag a=1").contains("__error__"));
}

#[test]
fn regexp_pattern_unpack_and_decolorize() {
    let got = labels_of(
        r#"{app="web"} | regexp "(?P<method>\\w+) (?P<path>[\\w|/]+) \\((?P<status>\\d+?)\\) (?P<duration>.*)""#,
        "POST /api/prom/api/v1/query_range (200) 1.5s",
    );
    assert!(
        got.contains(r#"method="POST""#)
            && got.contains(r#"duration="1.5s""#)
            && got.contains(r#"status="200""#),
        "{got}"
    );
    let got = labels_of(
        r#"{app="web"} | pattern "<method> <path> <_>""#,
        "GET /x HTTP/1.1",
    );
    assert!(
        got.contains(r#"method="GET""#) && got.contains(r#"path="/x""#),
        "{got}"
    );
    let (labels, line) = run(
        r#"{app="web"} | unpack"#,
        r#"{"container":"myapp","pod":"pod-3223f","_entry":"original log message"}"#,
    )
    .unwrap();
    assert_eq!(line, "original log message");
    assert!(labels.contains(r#"container="myapp""#), "{labels}");
    assert_eq!(
        line_of(r#"{app="web"} | decolorize"#, "\u{1b}[31mred\u{1b}[0m text"),
        "red text"
    );
    assert_eq!(
        line_of(r#"{app="web"} |> "<_> error <_>""#, "an error here"),
        "an error here"
    );
    assert_eq!(
        line_of(r#"{app="web"} | line_format "x" !> "x""#, "a"),
        "dropped"
    );
}

#[test]
fn drop_keep_and_label_format() {
    let line = r#"{"level": "info", "method": "GET", "path": "/", "host": "grafana.net", "status": "200"}"#;
    let got = labels_of(
        r#"{app="web"} | json | drop level_extracted, method="GET""#,
        line,
    );
    assert!(!got.contains("method") && got.contains("host"), "{got}");
    let got = labels_of(r#"{app="web"} | json | keep host, method="POST""#, line);
    assert_eq!(got, r#"{host="grafana.net"}"#);
    // keep never drops the error; drop does.
    assert!(labels_of(r#"{app="web"} | json | keep app"#, "nope").contains("__error__"));
    assert_eq!(
        labels_of(
            r#"{app="web"} | json | drop __error__, __error_details__"#,
            "nope"
        ),
        r#"{app="web", detected_level="stream-level", level="stream-level"}"#
    );
    let got = labels_of(
        r#"{app="web"} | logfmt | label_format dst=src, both="{{.src}}-{{.x}}", x="new""#,
        "src=a x=b",
    );
    assert!(
        got.contains(r#"dst="a""#)
            && !got.contains("src=")
            && got.contains(r#"both="a-b""#)
            && got.contains(r#"x="new""#),
        "{got}"
    );
    // A template error marks the line and leaves it as it was.
    let (labels, line) = run(r#"{app="web"} | line_format "{{ div 1 0 }}""#, "kept").unwrap();
    assert_eq!(line, "kept");
    assert!(labels.contains("TemplateFormatErr"), "{labels}");
}

#[test]
fn unwrap_conversions_and_errors() {
    let Expr::Metric(crate::logql::MetricExpr::Range(range)) =
        parse(r#"sum_over_time({app="web"} | logfmt | unwrap duration(took) [1m])"#).unwrap()
    else {
        panic!()
    };
    let (_, pipeline) = range.log.plan(0, 1, Direction::Forward);
    let labels = Arc::new(Labels::new([("app", "web")]));
    let out = pipeline
        .process(&labels, 0, b"took=1.5s", Level::Unknown)
        .unwrap();
    assert_eq!(out.value, 1.5);
    assert_eq!(
        out.labels.to_string(),
        r#"{app="web", detected_level="unknown"}"#,
        "the unwrapped label leaves the series"
    );
    assert!(
        pipeline
            .process(&labels, 0, b"other=1", Level::Unknown)
            .is_none(),
        "no label, no sample"
    );
    let out = pipeline
        .process(&labels, 0, b"took=1d", Level::Unknown)
        .unwrap();
    assert!(out.labels.to_string().contains("SampleExtractionErr"));
}

#[test]
fn hints_extract_only_what_is_needed() {
    let Expr::Log(log) = parse(r#"{app="web"} | json | status > 1"#).unwrap() else {
        panic!()
    };
    let (_, pipeline) = log.plan_for(0, 1, Some(&["level".to_owned()]));
    let labels = Arc::new(Labels::new([("app", "web")]));
    let out = pipeline
        .process(
            &labels,
            0,
            br#"{"level":"x","status":5,"other":"y"}"#,
            Level::Unknown,
        )
        .unwrap();
    assert_eq!(
        out.labels.to_string(),
        r#"{app="web", detected_level="unknown", level="x", status="5"}"#
    );
}

#[test]
fn a_parser_nobody_reads_does_not_run() {
    let Expr::Log(log) = parse(r#"{app="web"} | json"#).unwrap() else {
        panic!()
    };
    let labels = Arc::new(Labels::new([("app", "web")]));
    let (_, idle) = log.plan_for(0, 1, Some(&[]));
    let out = idle
        .process(&labels, 0, b"not json", Level::Unknown)
        .unwrap();
    assert_eq!(
        out.labels.to_string(),
        r#"{app="web", detected_level="unknown"}"#
    );
    // Filtering on the error makes the parser needed again.
    let Expr::Log(log) = parse(r#"{app="web"} | json | __error__="""#).unwrap() else {
        panic!()
    };
    let (_, needed) = log.plan_for(0, 1, Some(&[]));
    assert!(
        needed
            .process(&labels, 0, b"not json", Level::Unknown)
            .is_none()
    );
}
