//! The parser stages: `json`, `logfmt`, `regexp`, `pattern`, `unpack`.
//!
//! Each adds labels the way Loki's parsers do: keys sanitised into label
//! names, `_extracted` after a name the stream already has, the first of
//! two equal keys kept, values holding U+FFFD read as empty, and only the
//! labels the query needs when it said which (`wanted`).

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::Entry;
use crate::logql::ast::{JsonPath, LogfmtOptions, NamedRegex, PathStep};
use crate::logql::convert::sanitize_key;
use crate::logql::pattern::Pattern;

const JSON_ERROR: &str = "JSONParserErr";
const LOGFMT_ERROR: &str = "LogfmtParserErr";

/// Labels found by one parser run, the first of equal names kept.
struct Found<'w> {
    pairs: Vec<(String, String)>,
    wanted: Option<&'w HashSet<String>>,
    /// The JSON keys each pair came from, when asked for (field detection).
    paths: Option<Vec<Vec<String>>>,
}

impl<'w> Found<'w> {
    fn new(wanted: Option<&'w HashSet<String>>) -> Self {
        Self {
            pairs: Vec::new(),
            wanted,
            paths: None,
        }
    }

    /// Adds `name` (already sanitised) unless unwanted or already found;
    /// answers whether it was added.
    fn add(&mut self, entry: &Entry<'_, '_>, mut name: String, value: String) -> bool {
        if name.is_empty() {
            return false;
        }
        if entry.stream_has(&name) {
            name.push_str("_extracted");
        }
        if self.wanted.is_some_and(|w| !w.contains(&name)) {
            return false;
        }
        if self.pairs.iter().any(|(n, _)| *n == name) {
            return false;
        }
        // Prometheus refuses the replacement character; Loki empties the value.
        let value = if value.contains('\u{FFFD}') {
            String::new()
        } else {
            value
        };
        self.pairs.push((name, value));
        true
    }

    fn apply(self, entry: &mut Entry<'_, '_>) {
        for (name, value) in self.pairs {
            entry.set(&name, value);
        }
    }
}

/// An object's members in document order (a map would lose the order
/// and keep the last of two equal keys).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Ordered)
    }
}

fn line_text<'l>(line: &'l [u8]) -> std::borrow::Cow<'l, str> {
    String::from_utf8_lossy(line)
}

/// A scalar's text as Loki writes it: strings unescaped, numbers as
/// written, booleans; `None` for null, arrays and objects.
fn scalar(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok(),
        b'n' | b'[' | b'{' => None,
        _ => Some(text.to_owned()),
    }
}

/// A key appended to a flattened prefix (`a.b` + `c d` → `a_b_c_d`).
fn joined(prefix: &str, key: &str) -> String {
    let part = sanitize_key(key);
    if prefix.is_empty() {
        return part;
    }
    let part = part
        .strip_prefix('_')
        .filter(|_| key.trim().starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(&part);
    if part.is_empty() {
        return prefix.to_owned();
    }
    format!("{prefix}_{part}")
}

/// How deep `json` follows nested objects (serde_json's own limit).
const MAX_JSON_DEPTH: usize = 128;

fn flatten(
    members: Members<'_>,
    prefix: &str,
    path: &mut Vec<String>,
    found: &mut Found<'_>,
    entry: &Entry<'_, '_>,
    depth: usize,
) -> Result<(), serde_json::Error> {
    if depth > MAX_JSON_DEPTH {
        return Err(serde::de::Error::custom("recursion limit exceeded"));
    }
    for (key, raw) in members.0 {
        let name = joined(prefix, &key);
        if raw.get().starts_with('{')
            && let Some(wanted) = found.wanted
            && !name.is_empty()
            && !wanted.iter().any(|w| w.starts_with(&name))
        {
            continue;
        }
        if found.paths.is_some() {
            path.push(key.clone());
        }
        if raw.get().starts_with('{') {
            flatten(
                serde_json::from_str(raw.get())?,
                &name,
                path,
                found,
                entry,
                depth + 1,
            )?;
        } else if let Some(value) = scalar(raw)
            && found.add(entry, name, value)
            && let Some(paths) = &mut found.paths
        {
            paths.push(path.clone());
        }
        if found.paths.is_some() {
            path.pop();
        }
    }
    Ok(())
}

/// `| json`: every scalar of the object, nested keys joined with `_`;
/// arrays skipped.
pub(super) fn json(entry: &mut Entry<'_, '_>, wanted: Option<&HashSet<String>>) {
    let text = line_text(entry.line()).into_owned();
    let mut found = Found::new(wanted);
    let result = serde_json::from_str::<Members<'_>>(&text)
        .and_then(|members| flatten(members, "", &mut Vec::new(), &mut found, entry, 1));
    match result {
        Ok(()) => found.apply(entry),
        Err(e) => {
            // Loki keeps what it read before the error.
            found.apply(entry);
            entry.fail(JSON_ERROR, e.to_string());
        }
    }
}

fn walk<'a>(mut raw: &'a RawValue, path: &JsonPath) -> Option<&'a RawValue> {
    for step in path {
        raw = match step {
            PathStep::Field(name) => {
                let members: Members<'a> = serde_json::from_str(raw.get()).ok()?;
                members.0.into_iter().find(|(k, _)| k == name)?.1
            }
            PathStep::Index(i) => {
                let items: Vec<&'a RawValue> = serde_json::from_str(raw.get()).ok()?;
                *items.get(*i)?
            }
        };
    }
    Some(raw)
}

/// `| json a="b.c[0]"`: only those paths; an object or array is kept as
/// its JSON text, a missing path gives an empty label.
pub(super) fn json_fields(entry: &mut Entry<'_, '_>, fields: &[(String, JsonPath)]) {
    if entry.line().is_empty() {
        return;
    }
    let text = line_text(entry.line()).into_owned();
    if !matches!(text.as_bytes()[0], b'"' | b'{' | b'[') {
        entry.fail(JSON_ERROR, "the line is not JSON".into());
        return;
    }
    let root: &RawValue = match serde_json::from_str(&text) {
        Ok(root) => root,
        Err(e) => {
            entry.fail(JSON_ERROR, e.to_string());
            return;
        }
    };
    for (label, path) in fields {
        let value = match walk(root, path) {
            Some(raw) => match raw.get().as_bytes().first() {
                Some(b'"') => serde_json::from_str::<String>(raw.get()).unwrap_or_default(),
                Some(b'n') | None => String::new(),
                _ => raw.get().to_owned(),
            },
            None => String::new(),
        };
        let name = if entry.stream_has(label) {
            format!("{label}_extracted")
        } else {
            label.clone()
        };
        entry.set(&name, value);
    }
}

/// A logfmt quoted value's escapes (`\"`, `\\`, `\n`, `\t`, `\uXXXX`, …).
fn unquote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(
                    u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .unwrap_or('\u{FFFD}'),
                );
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `| logfmt`: `key=value`, `key="quoted value"`, `key=`; a standalone
/// key only with `--keep-empty` or when asked for by name. A malformed
/// pair (`=v`, `a=b=c`, `a"b=c`, an unterminated quote) is skipped, or
/// with `--strict` ends the parse with `LogfmtParserErr`.
pub(super) fn logfmt(
    entry: &mut Entry<'_, '_>,
    options: &LogfmtOptions,
    wanted: Option<&HashSet<String>>,
) {
    let text = line_text(entry.line()).into_owned();
    let b = text.as_bytes();
    let mut found = Found::new(if options.fields.is_empty() {
        wanted
    } else {
        None
    });
    let mut error: Option<String> = None;
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let mut i = 0;
    // A malformed pair at `i`: noted; the scan stops (strict) or skips
    // to the next pair. Answers whether to go on.
    let malformed = |i: &mut usize, error: &mut Option<String>| -> bool {
        *error = Some(format!(
            "logfmt syntax error at pos {}: unexpected '{}'",
            *i + 1,
            b[*i] as char
        ));
        if options.strict {
            return false;
        }
        while *i < b.len() && b[*i] > b' ' {
            *i += 1;
        }
        true
    };
    while i < b.len() {
        while i < b.len() && b[i] <= b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] > b' ' && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        if i == start || (i < b.len() && b[i] == b'"') {
            if !malformed(&mut i, &mut error) {
                break;
            }
            continue;
        }
        let key = &text[start..i];
        if i >= b.len() || b[i] <= b' ' {
            let asked = options.fields.iter().any(|(_, k)| k == key);
            if options.keep_empty || asked {
                pairs.push((key, String::new()));
            }
            continue;
        }
        i += 1; // '='
        if i >= b.len() || b[i] <= b' ' {
            pairs.push((key, String::new()));
            continue;
        }
        if b[i] == b'"' {
            let open = i;
            i += 1;
            let mut closed = None;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 2,
                    b'"' => {
                        closed = Some(i);
                        break;
                    }
                    _ => i += 1,
                }
            }
            let Some(close) = closed else {
                error = Some(format!(
                    "logfmt syntax error at pos {}: unterminated quoted value",
                    open + 1
                ));
                break;
            };
            i = close + 1;
            if i < b.len() && b[i] > b' ' {
                if !malformed(&mut i, &mut error) {
                    break;
                }
                continue;
            }
            pairs.push((key, unquote(&text[open + 1..close])));
            continue;
        }
        let value_start = i;
        while i < b.len() && b[i] > b' ' && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        if i < b.len() && b[i] > b' ' {
            if !malformed(&mut i, &mut error) {
                break;
            }
            continue;
        }
        pairs.push((key, text[value_start..i].to_owned()));
    }
    if options.fields.is_empty() {
        for (key, value) in pairs {
            found.add(entry, sanitize_key(key), value);
        }
    } else {
        for (label, _) in &options.fields {
            if !entry.stream_has(label) {
                found.pairs.push((label.clone(), String::new()));
            }
        }
        for (key, value) in pairs {
            let Some((label, _)) = options
                .fields
                .iter()
                .find(|(_, k)| sanitize_key(k) == sanitize_key(key))
            else {
                continue;
            };
            let name = if entry.stream_has(label) {
                format!("{label}_extracted")
            } else {
                label.clone()
            };
            match found.pairs.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) if slot.1.is_empty() => slot.1 = value,
                Some(_) => {}
                None => found.pairs.push((name, value)),
            }
        }
    }
    found.apply(entry);
    if options.strict
        && let Some(details) = error
    {
        entry.fail(LOGFMT_ERROR, details);
    }
}

/// `| regexp "(?P<name>…)"`: the named groups of the first match; no
/// match, no labels.
pub(super) fn regexp(
    entry: &mut Entry<'_, '_>,
    regex: &NamedRegex,
    wanted: Option<&HashSet<String>>,
) {
    let line = entry.line().to_vec();
    let Some(captures) = regex.regex.captures(&line) else {
        return;
    };
    let mut found = Found::new(wanted);
    for (i, name) in regex.names.iter().enumerate() {
        if let Some(name) = name {
            let value = captures.get(i).map(|m| m.as_bytes()).unwrap_or_default();
            found.add(
                entry,
                name.clone(),
                String::from_utf8_lossy(value).into_owned(),
            );
        }
    }
    found.apply(entry);
}

/// `| pattern "<a> <_> <b>"`: the captures, as far as the line matches.
pub(super) fn pattern(
    entry: &mut Entry<'_, '_>,
    pattern: &Pattern,
    wanted: Option<&HashSet<String>>,
) {
    let line = entry.line().to_vec();
    let mut found = Found::new(wanted);
    for (name, value) in pattern.captures(&line) {
        found.add(
            entry,
            name.to_owned(),
            String::from_utf8_lossy(value).into_owned(),
        );
    }
    found.apply(entry);
}

/// `| unpack`: a packed entry (`{"_entry": "line", "label": "v"}`) back
/// into its line and labels; only string members count, and labels only
/// when the object holds `_entry`.
pub(super) fn unpack(entry: &mut Entry<'_, '_>, wanted: Option<&HashSet<String>>) {
    if entry.line().is_empty() {
        return;
    }
    let text = line_text(entry.line()).into_owned();
    if !text.starts_with('{') {
        entry.fail(JSON_ERROR, "expecting a JSON object, but it is not".into());
        return;
    }
    let members: Members<'_> = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => {
            entry.fail(JSON_ERROR, e.to_string());
            return;
        }
    };
    let mut found = Found::new(wanted);
    let mut line = None;
    for (key, raw) in members.0 {
        if !raw.get().starts_with('"') {
            continue;
        }
        let Ok(value) = serde_json::from_str::<String>(raw.get()) else {
            continue;
        };
        if key == "_entry" {
            line = Some(value);
        } else {
            found.add(entry, sanitize_key(&key), value);
        }
    }
    if let Some(line) = line {
        found.apply(entry);
        entry.set_line(line.into_bytes());
    }
}

/// The fields Loki's field detection finds in a line: the `json` parser's
/// labels (with the JSON keys each came from), or, when the line is not
/// JSON, the `logfmt` parser's. Answers the parser that found them.
pub(crate) fn detect(entry: &mut Entry<'_, '_>) -> Option<(&'static str, Vec<DetectedField>)> {
    let text = line_text(entry.line()).into_owned();
    let mut found = Found::new(None);
    found.paths = Some(Vec::new());
    let json = serde_json::from_str::<Members<'_>>(&text)
        .and_then(|members| flatten(members, "", &mut Vec::new(), &mut found, entry, 1));
    if json.is_ok() {
        let paths = found.paths.take().unwrap_or_default();
        let fields = found
            .pairs
            .into_iter()
            .zip(paths)
            .map(|((name, value), path)| DetectedField {
                name,
                value,
                json_path: Some(path),
            })
            .collect();
        return Some(("json", fields));
    }
    logfmt(entry, &LogfmtOptions::default(), None);
    let fields: Vec<DetectedField> = entry
        .labels
        .iter()
        .flatten()
        .filter(|(n, _)| !entry.stream_has(n))
        .map(|(name, value)| DetectedField {
            name: name.clone(),
            value: value.clone(),
            json_path: None,
        })
        .collect();
    (!fields.is_empty()).then_some(("logfmt", fields))
}

/// A field found in a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedField {
    /// Its label name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The JSON keys it came from (`json` only).
    pub json_path: Option<Vec<String>>,
}
