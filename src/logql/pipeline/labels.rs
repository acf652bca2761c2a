//! The stages that filter and reshape labels, and the dispatch of every
//! stage.

use std::collections::HashSet;
use std::sync::LazyLock;

use super::{ERROR, ERROR_DETAILS, Entry, parsers};
use crate::logql::ast::{
    CompareOp, LabelFormat, LabelPredicate, LabelSelection, Stage, Unwrap, ValueKind,
};
use crate::logql::convert::{parse_float, parse_go_duration, parse_humanized_bytes};

/// ANSI escape sequences (the `ansi-regex` expression Loki's
/// `decolorize` uses).
static ANSI: LazyLock<regex::bytes::Regex> = LazyLock::new(|| {
    regex::bytes::Regex::new(
        r"[\x1b\x{9b}][\[\]()#;?]*(?:(?:(?:[a-zA-Z\d]*(?:;[a-zA-Z\d]*)*)?\x07)|(?:(?:\d{1,4}(?:;\d{0,4})*)?[\dA-PRZcf-ntqry=><~]))",
    )
    .expect("a valid expression")
});

/// Runs one stage; `false` when it drops the entry.
pub(super) fn run(
    stage: &Stage,
    entry: &mut Entry<'_, '_>,
    wanted: Option<&HashSet<String>>,
) -> bool {
    // Nothing downstream reads a label (nor `__error__`): a parser has
    // nothing to do (Loki's `NoLabels` hint).
    let idle = wanted.is_some_and(HashSet::is_empty);
    match stage {
        Stage::Json(_) | Stage::Logfmt(_) | Stage::Regexp(_) | Stage::Pattern(_) if idle => {}
        Stage::Line(filter) => return filter.keeps(entry.line()),
        Stage::Json(fields) if fields.is_empty() => parsers::json(entry, wanted),
        Stage::Json(fields) => parsers::json_fields(entry, fields),
        Stage::Logfmt(options) => parsers::logfmt(entry, options, wanted),
        Stage::Regexp(regex) => parsers::regexp(entry, regex, wanted),
        Stage::Pattern(pattern) => parsers::pattern(entry, pattern, wanted),
        Stage::Unpack => parsers::unpack(entry, wanted),
        Stage::Labels(predicate) => return holds(predicate, entry),
        Stage::LineFormat(template) => match template.render(entry) {
            Ok(line) => entry.set_line(line),
            Err(e) => entry.fail("TemplateFormatErr", e.to_string()),
        },
        Stage::LabelFormat(formats) => label_format(entry, formats),
        Stage::Drop(selections) => {
            for s in selections {
                let matches = match (&s.matcher, entry.get(&s.name)) {
                    (None, Some(_)) => true,
                    (Some(m), Some(v)) => m.matches_value(v),
                    (_, None) => false,
                };
                if matches {
                    entry.remove(&s.name);
                }
            }
        }
        Stage::Keep(selections) => keep(entry, selections),
        Stage::Decolorize => {
            if ANSI.is_match(entry.line()) {
                let clean = ANSI.replace_all(entry.line(), &b""[..]).into_owned();
                entry.set_line(clean);
            }
        }
    }
    true
}

fn keep(entry: &mut Entry<'_, '_>, selections: &[LabelSelection]) {
    entry.retain(|name, value| {
        selections
            .iter()
            .any(|s| s.name == name && s.matcher.as_ref().is_none_or(|m| m.matches_value(value)))
    });
}

/// Templates see the labels as they were before the stage; renames move
/// the label as it is now. A label may be named once per stage (checked
/// by the parser).
fn label_format(entry: &mut Entry<'_, '_>, formats: &[LabelFormat]) {
    let rendered: Vec<Option<Result<Vec<u8>, String>>> = formats
        .iter()
        .map(|f| match f {
            LabelFormat::Template { template, .. } => {
                Some(template.render(entry).map_err(|e| e.to_string()))
            }
            LabelFormat::Rename { .. } => None,
        })
        .collect();
    for (format, rendered) in formats.iter().zip(rendered) {
        match (format, rendered) {
            (LabelFormat::Rename { dst, src }, _) => {
                if let Some(value) = entry.get(src).map(str::to_owned) {
                    entry.remove(src);
                    entry.set(dst, value);
                }
            }
            (LabelFormat::Template { dst, .. }, Some(Ok(value))) => {
                entry.set(dst, String::from_utf8_lossy(&value).into_owned());
            }
            (LabelFormat::Template { .. }, Some(Err(details))) => {
                entry.fail("TemplateFormatErr", details);
            }
            (LabelFormat::Template { .. }, None) => {}
        }
    }
}

/// Whether a label predicate keeps the entry, as Loki's label filters do:
/// a string match reads a missing label as ""; a numeric comparison drops
/// an entry without the label, and keeps one whose value does not convert
/// but marks it with `LabelFilterErr`.
pub(crate) fn holds(predicate: &LabelPredicate, entry: &mut Entry<'_, '_>) -> bool {
    match predicate {
        LabelPredicate::And(a, b) => holds(a, entry) && holds(b, entry),
        LabelPredicate::Or(a, b) => holds(a, entry) || holds(b, entry),
        LabelPredicate::Match(m) => m.matches_value(entry.get(&m.name).unwrap_or("")),
        LabelPredicate::Ip { name, negate, ip } => {
            let found = entry.get(name).is_some_and(|v| ip.found_in(v.as_bytes()));
            found != *negate
        }
        LabelPredicate::Compare {
            name,
            op,
            value,
            kind,
        } => {
            if name == ERROR || name == ERROR_DETAILS {
                return false;
            }
            let Some(raw) = entry.get(name) else {
                return false;
            };
            let parsed = match kind {
                ValueKind::Number => parse_float(raw),
                ValueKind::Duration => parse_go_duration(raw),
                ValueKind::Bytes => parse_humanized_bytes(raw),
            };
            match parsed {
                Some(v) => CompareOp::holds(*op, v, *value),
                None => {
                    let details =
                        format!("cannot read {name}={raw:?} as a {kind:?}").to_lowercase();
                    entry.fail("LabelFilterErr", details);
                    true
                }
            }
        }
    }
}

fn predicate_names(p: &LabelPredicate, names: &mut HashSet<String>) {
    match p {
        LabelPredicate::And(a, b) | LabelPredicate::Or(a, b) => {
            predicate_names(a, names);
            predicate_names(b, names);
        }
        LabelPredicate::Match(m) => {
            names.insert(m.name.clone());
        }
        LabelPredicate::Compare { name, .. } | LabelPredicate::Ip { name, .. } => {
            names.insert(name.clone());
        }
    }
}

/// Adds the labels the stages read to `names`; `false` when a stage may
/// read any label (a template over `.`), so parsers must extract all.
pub(super) fn read_by(
    stages: &[Stage],
    unwrap: Option<&Unwrap>,
    names: &mut HashSet<String>,
) -> bool {
    let suffixed = |names: &mut HashSet<String>| {
        // A wanted name may come out of a parser with `_extracted`.
        let extra: Vec<String> = names.iter().map(|n| format!("{n}_extracted")).collect();
        names.extend(extra);
    };
    for stage in stages {
        match stage {
            Stage::Labels(p) => predicate_names(p, names),
            Stage::LineFormat(t) => match t.labels_read() {
                Some(read) => names.extend(read),
                None => return false,
            },
            Stage::LabelFormat(formats) => {
                for f in formats {
                    match f {
                        LabelFormat::Rename { src, .. } => {
                            names.insert(src.clone());
                        }
                        LabelFormat::Template { template, .. } => match template.labels_read() {
                            Some(read) => names.extend(read),
                            None => return false,
                        },
                    }
                }
            }
            Stage::Drop(s) | Stage::Keep(s) => names.extend(s.iter().map(|s| s.name.clone())),
            _ => {}
        }
    }
    if let Some(unwrap) = unwrap {
        names.insert(unwrap.label.clone());
        for p in &unwrap.post {
            predicate_names(p, names);
        }
    }
    suffixed(names);
    true
}
