//! Runs a log query's pipeline on entries: parsers, label filters,
//! `line_format`, and the line filters the store could not take.

use std::borrow::Cow;
use std::sync::Arc;

use super::lexer::{parse_bytes, parse_duration};
use super::{CompareOp, LabelPredicate, LogExpr, Stage, Template, TemplatePart, ValueKind};
use crate::log_database::labels::{Labels, sanitize_name};
use crate::log_database::query::{Direction, Query};

/// The stages left after the store has applied the leading line filters.
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

impl LogExpr {
    /// The store query for this expression over `[start, end)`, and the
    /// pipeline to run on what it returns. Leading line filters run inside
    /// the store, where whole blocks can be skipped.
    pub fn plan(&self, start: i64, end: i64, direction: Direction) -> (Query, Pipeline) {
        let mut query = Query::new(self.selector.clone());
        query.start = start;
        query.end = end;
        query.direction = direction;
        let mut rest = self.stages.as_slice();
        while let Some((Stage::Line(filter), tail)) = rest.split_first() {
            query.filters.push((**filter).clone());
            rest = tail;
        }
        (
            query,
            Pipeline {
                stages: rest.to_vec(),
            },
        )
    }
}

/// What an entry looks like after the pipeline.
pub struct Processed<'a> {
    /// The labels: the stream's, plus any the pipeline extracted.
    pub labels: Arc<Labels>,
    /// The line, possibly rewritten by `line_format`.
    pub line: Cow<'a, [u8]>,
}

struct State<'a> {
    stream: &'a Labels,
    extracted: Vec<(String, String)>,
    line: Cow<'a, [u8]>,
}

impl State<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.extracted
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .or_else(|| self.stream.get(name))
    }

    /// Adds a parsed label; a name the stream already has gets `_extracted`,
    /// and the first of two equal names wins (as in Loki).
    fn add(&mut self, name: &str, value: String) {
        let mut name = sanitize_name(name);
        if self.stream.get(&name).is_some() {
            name.push_str("_extracted");
        }
        if !self.extracted.iter().any(|(n, _)| *n == name) {
            self.extracted.push((name, value));
        }
    }

    fn set_error(&mut self, error: &str, details: String) {
        if self.get("__error__").is_none() {
            self.extracted.push(("__error__".into(), error.into()));
            self.extracted.push(("__error_details__".into(), details));
        }
    }
}

impl Pipeline {
    /// Whether the pipeline leaves every entry as it is.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs the pipeline on one entry; `None` when a stage drops it.
    pub fn process<'a>(
        &self,
        labels: &'a Arc<Labels>,
        timestamp: i64,
        line: &'a [u8],
    ) -> Option<Processed<'a>> {
        if self.stages.is_empty() {
            return Some(Processed {
                labels: labels.clone(),
                line: Cow::Borrowed(line),
            });
        }
        let mut state = State {
            stream: labels,
            extracted: Vec::new(),
            line: Cow::Borrowed(line),
        };
        for stage in &self.stages {
            match stage {
                Stage::Line(filter) => {
                    if !filter.keeps(&state.line) {
                        return None;
                    }
                }
                Stage::Json => json(&mut state),
                Stage::Logfmt => logfmt(&mut state),
                Stage::Labels(predicate) => {
                    if !holds(predicate, &mut state) {
                        return None;
                    }
                }
                Stage::LineFormat(template) => {
                    let rendered = render(template, &state, timestamp);
                    state.line = Cow::Owned(rendered);
                }
            }
        }
        let labels = if state.extracted.is_empty() {
            labels.clone()
        } else {
            let pairs = labels
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .chain(state.extracted);
            Arc::new(Labels::new(pairs))
        };
        Some(Processed {
            labels,
            line: state.line,
        })
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, state: &mut State<'_>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}_{key}")
                };
                flatten(&name, v, state);
            }
        }
        serde_json::Value::String(s) => state.add(prefix, s.clone()),
        serde_json::Value::Number(n) => state.add(prefix, n.to_string()),
        serde_json::Value::Bool(b) => state.add(prefix, b.to_string()),
        // Arrays are skipped, as in Loki; null is no value.
        serde_json::Value::Array(_) | serde_json::Value::Null => {}
    }
}

fn json(state: &mut State<'_>) {
    match serde_json::from_slice::<serde_json::Value>(&state.line) {
        Ok(value @ serde_json::Value::Object(_)) => flatten("", &value, state),
        Ok(_) => state.set_error("JSONParserErr", "the line is not a JSON object".into()),
        Err(e) => state.set_error("JSONParserErr", e.to_string()),
    }
}

fn logfmt(state: &mut State<'_>) {
    let text = String::from_utf8_lossy(&state.line).into_owned();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut pairs = Vec::new();
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            if bytes[i] == b'"' {
                state.set_error("LogfmtParserErr", format!("unexpected '\"' at byte {i}"));
                return;
            }
            i += 1;
        }
        let key = &text[key_start..i];
        if key.is_empty() {
            if i < bytes.len() && bytes[i] == b'=' {
                state.set_error("LogfmtParserErr", format!("'=' without a key at byte {i}"));
                return;
            }
            continue;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            pairs.push((key.to_owned(), String::new()));
            continue;
        }
        i += 1;
        let value = if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut v = String::new();
            let mut closed = false;
            let mut chars = text[i..].char_indices();
            while let Some((off, c)) = chars.next() {
                match c {
                    '"' => {
                        i += off + 1;
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, 'n')) => v.push('\n'),
                        Some((_, 't')) => v.push('\t'),
                        Some((_, other)) => v.push(other),
                        None => break,
                    },
                    c => v.push(c),
                }
            }
            if !closed {
                state.set_error("LogfmtParserErr", "unterminated quoted value".into());
                return;
            }
            v
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            text[start..i].to_owned()
        };
        pairs.push((key.to_owned(), value));
    }
    for (k, v) in pairs {
        state.add(&k, v);
    }
}

/// Reads a Go-style duration (`1.5s`, `250ms`) as seconds.
fn duration_seconds(text: &str) -> Option<f64> {
    parse_duration(text.trim()).map(|ns| ns as f64 / 1e9)
}

fn holds(predicate: &LabelPredicate, state: &mut State<'_>) -> bool {
    match predicate {
        LabelPredicate::And(a, b) => holds(a, state) && holds(b, state),
        LabelPredicate::Or(a, b) => holds(a, state) || holds(b, state),
        LabelPredicate::Match(m) => m.matches_value(state.get(&m.name).unwrap_or("")),
        LabelPredicate::Compare {
            name,
            op,
            value,
            kind,
        } => {
            let raw = state.get(name).unwrap_or("").to_owned();
            let parsed = match kind {
                ValueKind::Number => raw.trim().parse::<f64>().ok(),
                ValueKind::Duration => duration_seconds(&raw),
                ValueKind::Bytes => parse_bytes(&raw),
            };
            match parsed {
                Some(v) => CompareOp::holds(*op, v, *value),
                None => {
                    // As in Loki: a value that does not convert keeps the
                    // line and marks it, so `| __error__=""` can drop it.
                    state.set_error(
                        "LabelFilterErr",
                        format!("cannot compare {name}={raw:?} as a {kind:?}"),
                    );
                    true
                }
            }
        }
    }
}

fn render(template: &Template, state: &State<'_>, timestamp: i64) -> Vec<u8> {
    let _ = timestamp;
    let mut out = Vec::new();
    for part in &template.0 {
        match part {
            TemplatePart::Text(t) => out.extend_from_slice(t.as_bytes()),
            TemplatePart::Label(name) => {
                out.extend_from_slice(state.get(name).unwrap_or("").as_bytes())
            }
            TemplatePart::Line => out.extend_from_slice(&state.line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::{Expr, parse};

    fn run(query: &str, line: &str) -> Option<(String, String)> {
        let Expr::Log(log) = parse(query).unwrap() else {
            panic!()
        };
        let (_, pipeline) = log.plan(0, 1, Direction::Forward);
        let labels = Arc::new(Labels::new([("app", "web"), ("level", "stream-level")]));
        pipeline.process(&labels, 0, line.as_bytes()).map(|p| {
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
}
