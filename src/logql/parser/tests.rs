//! Parser tests: valid queries, shapes, errors and nesting bounds.

use super::*;
use crate::logql::ParseError;

fn ok(q: &str) -> Expr {
    parse(q).unwrap_or_else(|e| panic!("{q}: {e}"))
}

fn err(q: &str) -> String {
    match parse(q) {
        Ok(e) => panic!("{q} parsed as {e:?}"),
        Err(e) => e.to_string(),
    }
}

/// Every construct that nests, `n` deep.
fn deep(n: usize) -> Vec<String> {
    let range = r#"count_over_time({app="web"}[1m])"#;
    vec![
        format!("{}{range}{}", "(".repeat(n), ")".repeat(n)),
        format!("{}{range}{}", "sum(".repeat(n), ")".repeat(n)),
        format!("{}{range}{}", "sum by (app) (".repeat(n), ")".repeat(n)),
        format!("{}{range}{}", "topk(1, ".repeat(n), ")".repeat(n)),
        format!("{range}{}", " + 1".repeat(n)),
        format!("{}1{}", "(1 + ".repeat(n), ")".repeat(n)),
        format!("{}1", "2 ^ ".repeat(n)),
        format!(
            r#"{{app="web"}} | json | {}a="1"{}"#,
            "(".repeat(n),
            ")".repeat(n)
        ),
        format!(
            r#"{{app="web"}} | json | a="1"{}"#,
            r#" and a="1""#.repeat(n)
        ),
        format!(
            r#"{{app="web"}} | json | a="1"{}"#,
            r#" or a="1""#.repeat(n)
        ),
        format!(r#"{{app="web"}} | json | a="1"{}"#, r#", a="1""#.repeat(n)),
    ]
}

#[test]
fn nesting_is_bounded_with_a_clear_error() {
    // Shallow enough: parses.
    for q in deep(20) {
        ok(&q);
    }
    // On a tokio worker's stack (2 MiB), in a debug build: no overflow.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            for n in [MAX_DEPTH + 1, 2_000, 20_000, 100_000] {
                for q in deep(n) {
                    let e = err(&q);
                    assert!(e.contains("nests more than 100 levels"), "{e}");
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn valid_queries() {
    for q in [
        r#"{namespace="default"}"#,
        r#"{namespace="default", app=~"web.*"} |= "error" != `timeout` |~ "5\\d\\d" !~ "(?i)health""#,
        r#"{app="web"} | json | level="error""#,
        r#"{app="web"} | logfmt | status >= 500 and took > 250ms or size > 1MB"#,
        r#"{app="web"} | json | (level="error" or level="warn"), status!=404"#,
        r#"{app="web"} | json | line_format "{{.level}}: {{ .msg }} ({{__line__}})""#,
        r#"count_over_time({app="web"}[5m])"#,
        r#"sum by (level) (count_over_time({app="web"} | json [1m]))"#,
        r#"sum(rate({app="web"} |= "err" [30s])) by (pod_name)"#,
        r#"topk(3, sum by (app) (bytes_rate({namespace=~".+"}[5m])))"#,
        r#"avg without (pod_name) (bytes_over_time({app="x"}[1h]))"#,
        "vector(1)+vector(1)",
        "1 + 2 * 3 ^ 2",
        "-1.5",
        r#"sum(count_over_time({a="b"}[1m])) / 60 > 0.5"#,
    ] {
        ok(q);
    }
}

#[test]
fn log_and_metric_shapes() {
    let Expr::Log(log) = ok(r#"{a="1"} |= "x" | json | b > 2"#) else {
        panic!()
    };
    assert_eq!(log.selector.len(), 1);
    assert_eq!(log.stages.len(), 3);
    let Expr::Metric(MetricExpr::Binary { op, .. }) = ok("1 + 2 * 3") else {
        panic!()
    };
    assert_eq!(op, BinaryOp::Add, "* binds tighter than +");
    let Expr::Metric(MetricExpr::Aggregate { grouping, .. }) =
        ok(r#"sum(count_over_time({a="1"}[1m])) by (x)"#)
    else {
        panic!()
    };
    assert_eq!(
        grouping,
        Some(Grouping {
            without: false,
            labels: vec!["x".into()]
        })
    );
}

#[test]
fn errors_say_where_and_what() {
    assert_eq!(
        err(r#"{namespace="default", app "web"}"#),
        "parse error at 1:27: expected '=', '!=', '=~' or '!~', found string \"web\""
    );
    assert!(err(r#"{app=~".*"}"#).contains("at least one matcher"));
    assert!(err("{}").contains("expected a label name"));
    assert!(err(r#"sum_over_time({a="b"}[1m])"#).contains("without unwrap"));
    assert!(err(r#"count_over_time({a="b"} | unwrap x [1m])"#).contains("with unwrap"));
    assert!(err(r#"{a="b"} | regexp "(.)""#).contains("at least one named capture"));
    assert!(err(r#"count_over_time({a="b"})"#).contains("expected a range like [5m]"));
    assert!(err(r#"{a="b"} + 1"#).contains("must be metric queries"));
    assert!(err(r#"{a=~"("}"#).contains("invalid regular expression"));
    assert!(err(r#"{a="b"} | line_format "{{ if .x }}""#).contains("needs {{end}}"));
    assert!(err("1 and vector(1)").contains("set operator and not allowed"));
    assert!(err(r#"{a="b""#).contains("expected ',' or '}'"));
    assert!(err("").contains("expected a query"));
    assert!(err("{a=\"b\"}\n  |= 5").starts_with("parse error at 2:6"));
}

proptest::proptest! {
    #[test]
    fn the_parser_never_panics(q in r#"[{}()\[\]|=!~<>+\-*/%^,a-z0-9 ."`_\\]{0,60}"#) {
        let _ = parse(&q);
    }

    /// Random mixes of every nestable construct, up to three times the
    /// limit: parsed (shallow), or refused with the nesting error.
    #[test]
    fn deep_random_nesting_parses_or_is_refused_never_overflows(
        layers in proptest::collection::vec(0usize..6, 0..300)
    ) {
        let mut q = r#"count_over_time({app="web"} | json | a="1" [1m])"#.to_string();
        for layer in &layers {
            q = match layer {
                0 => format!("({q})"),
                1 => format!("sum({q})"),
                2 => format!("sum by (app) ({q})"),
                3 => format!("topk(2, {q})"),
                4 => format!("{q} + 1"),
                _ => format!("1 * ({q})"),
            };
        }
        let depth = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse(&q).map(|_| ()).map_err(|e| e.to_string()))
            .unwrap()
            .join()
            .unwrap();
        if let Err(e) = depth {
            proptest::prop_assert!(e.contains("nests more than"), "{}", e);
        }
    }

    #[test]
    fn mutations_of_valid_queries_never_panic(which in 0usize..4, cut in 0usize..200, insert in "[{}()|=!~\"`\\[\\]<>#$.]{0,3}") {
        let bases = [
            r#"sum by (level) (count_over_time({app=~"web.*"} |= "err" | json | status >= 500 [5m]))"#,
            r#"quantile_over_time(0.9, {a="b"} |= "x" or "y" | logfmt --strict h, f="g" | unwrap duration(t) | __error__="" [1m] offset 5m) by (h)"#,
            r#"rate({a="b"} |> "<_> <m> <_>" | pattern "<ip> <_>" | label_format x=`{{ .ip | trunc 3 }}` | drop y, z="1" [1m]) / on (a) group_left (b) sum by (a) (rate({a="c"}[1m])) > bool 1"#,
            r#"{a="b"} | json p="x.y[0]" | regexp "(?P<n>\\d+)" | addr = ip("10.0.0.0/8") | keep n | line_format "{{ if eq .n \"1\" }}one{{ else }}{{ printf \"%05d\" .n }}{{ end }}""#,
        ];
        let base = bases[which];
        let cut = (cut.min(base.len())..=base.len()).find(|&i| base.is_char_boundary(i)).unwrap_or(base.len());
        let q = format!("{}{}{}", &base[..cut], insert, &base[cut..]);
        let _ = parse(&q);
    }
}

/// Every construct of Loki 3.x parses.
#[test]
fn the_whole_grammar() {
    for q in [
        // Line filters.
        r#"{app="web"} |= "a" or "b" != "c" or "d""#,
        r#"{app="web"} |> "<_> error <_>" !> "<_> debug <_>""#,
        r#"{app="web"} |= ip("10.0.0.0/8") != ip("10.1.1.1-10.1.1.9")"#,
        "{app=\"web\"} # a comment\n |= \"x\"",
        // Parsers and formatters.
        r#"{app="web"} | json first_server="servers[0]", ua="request.headers[\"User-Agent\"]", servers"#,
        r#"{app="web"} | logfmt --strict --keep-empty host, fwd_ip="fwd""#,
        r#"{app="web"} | regexp "(?P<method>\\w+) (?P<path>[\\w|/]+)""#,
        r#"{app="web"} | pattern "<ip> - - <_> \"<method> <uri> <_>\"""#,
        r#"{app="web"} | unpack | decolorize | drop a, b="c", d=~"e.*" | keep x, y!="z""#,
        r#"{app="web"} | label_format dst=src, new="{{ .a | upper }}""#,
        r#"{app="web"} | logfmt | count > -1 and took <= -1.5s"#,
        r#"{app="web"} | logfmt | addr = ip("192.168.0.0/16") or addr != ip("10.0.0.1")"#,
        r#"{app="web"} | logfmt | a="b" c="d""#,
        // Unwrap and range functions.
        r#"sum_over_time({app="web"} | logfmt | unwrap bytes(size) | __error__="" [5m])"#,
        r#"avg_over_time({app="web"} | logfmt | unwrap duration(took) [5m]) by (pod)"#,
        r#"quantile_over_time(0.99, {app="web"} | json | unwrap latency [5m]) without (pod)"#,
        r#"rate_counter({app="web"} | logfmt | unwrap total [1m])"#,
        r#"absent_over_time({app="web"}[5m])"#,
        r#"count_over_time({app="web"}[5m] offset 1h)"#,
        r#"count_over_time({app="web"}[5m] | json)"#,
        r#"count_over_time(({app="web"} |= "x")[5m])"#,
        r#"rate({app="web"} | logfmt | unwrap n [1m])"#,
        // Vector operators.
        r#"bottomk(2, sum by (a) (rate({app="web"}[1m])))"#,
        r#"sort_desc(sum by (a) (rate({app="web"}[1m])))"#,
        r#"stddev by (a) (rate({app="web"}[1m])) + stdvar(rate({app="web"}[1m]))"#,
        r#"label_replace(rate({app="web"}[1m]), "dst", "$1", "app", "(w)eb")"#,
        r#"sum(rate({app="a"}[1m])) or vector(0)"#,
        r#"rate({app="a"}[1m]) and on (pod) rate({app="b"}[1m]) unless ignoring (x) rate({app="c"}[1m])"#,
        r#"rate({app="a"}[1m]) / on (pod) group_left (node) rate({app="b"}[1m])"#,
        r#"rate({app="a"}[1m]) * ignoring (x) group_right rate({app="b"}[1m])"#,
        r#"rate({app="a"}[1m]) > bool 1"#,
        "1 > bool 2",
        "-vector(1)",
        r#"approx_topk(3, sum by (a) (rate({app="web"}[1m])))"#,
    ] {
        ok(q);
    }
}

#[test]
fn precise_errors_for_the_new_grammar() {
    for (q, want) in [
        (r#"{a="b"} | pattern "<a><b>""#, "consecutive captures"),
        (r#"{a="b"} | pattern "<_> x""#, "no named capture"),
        (r#"{a="b"} | regexp "(?P<1x>.)""#, "invalid"),
        (r#"{a="b"} |= ip("300.0.0.1")"#, "is not an address"),
        (r#"{a="b"} | logfmt --fast"#, "unknown logfmt flag"),
        (
            r#"{a="b"} | label_format a=b, a="c""#,
            "multiple label name 'a'",
        ),
        (r#"{a="b"} | json a="b..c""#, "cannot parse JSON path"),
        (
            r#"{a="b"} | unwrap x"#,
            "only allowed inside a range aggregation",
        ),
        (
            r#"sum_over_time({a="b"} | unwrap x | json [1m])"#,
            "only label filters may follow unwrap",
        ),
        (
            r#"sum_over_time({a="b"} | unwrap x [1m]) by (a)"#,
            "grouping not allowed for sum_over_time",
        ),
        (
            r#"count_over_time({a="b"}[1m]) by (a)"#,
            "grouping not allowed for count_over_time",
        ),
        (
            r#"rate({a="b"}[1m]) + bool 1"#,
            "bool modifier can only be used on comparison",
        ),
        (
            r#"rate({a="b"}[1m]) and on (x) group_left rate({a="c"}[1m])"#,
            "no grouping allowed",
        ),
        (r#"topk(0, rate({a="b"}[1m]))"#, "positive integer"),
        (r#"sort by (a) (rate({a="b"}[1m]))"#, "does not take by"),
        ("count_values(\"x\", vector(1))", "PromQL function"),
        (
            r#"label_replace(vector(1), "1bad", "", "a", "")"#,
            "invalid destination label",
        ),
    ] {
        let e = err(q);
        assert!(e.contains(want), "{q}: {e}");
    }
}

#[test]
fn label_filter_precedence_is_left_to_right() {
    let Expr::Log(log) = ok(r#"{a="b"} | logfmt | x="1" or y="2" and z="3""#) else {
        panic!()
    };
    let Stage::Labels(LabelPredicate::And(lhs, _)) = &log.stages[1] else {
        panic!("{:?}", log.stages[1])
    };
    assert!(matches!(**lhs, LabelPredicate::Or(..)));
}

#[test]
fn line_filter_or_branches() {
    let Expr::Log(log) = ok(r#"{a="b"} |= "x" or "y" != "p" or "q""#) else {
        panic!()
    };
    // One `any` filter for the positive branches, one filter per negative one.
    assert_eq!(log.stages.len(), 3);
    let _: Option<ParseError> = None;
}
