//! `detected_level`: the level of an entry, found once when it is written
//! and kept with it as structured metadata (one byte per entry, not a
//! stream label: it must not multiply streams), the way Loki's distributor
//! finds it (`pkg/distributor/field_detection.go`): a level field of a JSON
//! or logfmt line, else words such as `ERROR` / `[warn]` in the line.

use memchr::memmem;

/// The name Loki gives it.
pub const LABEL: &str = "detected_level";

/// A normalised level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// Nothing says.
    #[default]
    Unknown = 0,
    /// `trace`, `trc`.
    Trace = 1,
    /// `debug`, `dbg`.
    Debug = 2,
    /// `info`, `inf`, `information`.
    Info = 3,
    /// `warn`, `wrn`, `warning`.
    Warn = 4,
    /// `error`, `err`.
    Error = 5,
    /// `critical`.
    Critical = 6,
    /// `fatal`.
    Fatal = 7,
}

/// The field names Loki reads a level from (`log_level_fields` default).
const FIELDS: &[&str] = &[
    "level",
    "LEVEL",
    "Level",
    "log.level",
    "severity",
    "SEVERITY",
    "Severity",
    "SeverityText",
    "lvl",
    "LVL",
    "Lvl",
    "severity_text",
    "Severity_Text",
    "SEVERITY_TEXT",
];

/// How deep into nested JSON objects a level field is looked for.
const JSON_DEPTH: usize = 8;

impl Level {
    /// The value Loki shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Unknown => "unknown",
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Critical => "critical",
            Level::Fatal => "fatal",
        }
    }

    /// The level a stored byte stands for (unknown bytes read as unknown).
    pub fn from_byte(b: u8) -> Self {
        match b {
            1 => Level::Trace,
            2 => Level::Debug,
            3 => Level::Info,
            4 => Level::Warn,
            5 => Level::Error,
            6 => Level::Critical,
            7 => Level::Fatal,
            _ => Level::Unknown,
        }
    }

    /// A level word as Loki normalises it (case-insensitive); `None` for
    /// anything else.
    pub fn named(word: &str) -> Option<Self> {
        let w = word.to_ascii_lowercase();
        Some(match w.as_str() {
            "trace" | "trc" => Level::Trace,
            "debug" | "dbg" => Level::Debug,
            "info" | "inf" | "information" => Level::Info,
            "warn" | "wrn" | "warning" => Level::Warn,
            "error" | "err" => Level::Error,
            "critical" => Level::Critical,
            "fatal" => Level::Fatal,
            _ => return None,
        })
    }

    /// The level of a line: a level field if the line is JSON or logfmt and
    /// has one with a known value, else the words in the line.
    pub fn of_line(line: &[u8]) -> Self {
        let value = if is_json(line) {
            json_level(line)
        } else if memchr::memchr(b'=', line).is_some() {
            logfmt_level(line)
        } else {
            None
        };
        value
            .and_then(|v| Level::named(&v))
            .unwrap_or_else(|| words(line))
    }
}

/// What Loki shows for a level label a stream already has: a known word
/// normalised, anything else as it is.
pub fn normalize(value: &str) -> String {
    Level::named(value).map_or_else(|| value.to_owned(), |l| l.as_str().to_owned())
}

/// The value of the first level field a stream's labels have, if any
/// (Loki takes a stream's own level label before the line).
pub fn from_labels<'a>(labels: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    FIELDS
        .iter()
        .map(|f| f.replace('.', "_"))
        .find_map(|f| labels(&f).filter(|v| !v.is_empty()))
}

fn is_json(line: &[u8]) -> bool {
    let trimmed = line.trim_ascii();
    trimmed.first() == Some(&b'{') && trimmed.last() == Some(&b'}')
}

/// The first level field (by document order) of a JSON object, looked for
/// in nested objects too. Reading stops at the field: the rest of the line
/// is not parsed (most loggers write the level first), as Loki's field
/// lookup does not read past what it finds either.
fn json_level(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let mut pos = 0;
    match scan::object(text.as_bytes(), &mut pos, 0) {
        Some(found) => found,
        None => json_level_parsed(text),
    }
}

/// [`json_level`] by serde_json, for what the scanner is not sure of.
fn json_level_parsed(text: &str) -> Option<String> {
    use serde::de::{Deserializer, Error, MapAccess, Visitor};
    use std::cell::RefCell;
    /// Where the value goes; parsing then ends with an error on purpose.
    struct Find<'f>(usize, &'f RefCell<Option<String>>);
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                let raw: &'de serde_json::value::RawValue = map.next_value()?;
                let raw = raw.get();
                if FIELDS.contains(&key.as_ref()) {
                    if raw.starts_with('"')
                        && let Ok(value) = serde_json::from_str::<String>(raw)
                    {
                        *self.1.borrow_mut() = Some(value);
                        return Err(A::Error::custom("found"));
                    }
                    continue;
                }
                if self.0 < JSON_DEPTH && raw.starts_with('{') {
                    let mut de = serde_json::Deserializer::from_str(raw);
                    let _ = de.deserialize_map(Find(self.0 + 1, self.1));
                    if self.1.borrow().is_some() {
                        return Err(A::Error::custom("found"));
                    }
                }
            }
            Ok(())
        }
    }
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let _ = de.deserialize_map(Find(0, &found));
    found.into_inner()
}

/// A scan of a JSON object's keys that builds no values: most JSON lines
/// are plain (no escapes in keys or in the level), and this finds their
/// level field in a fraction of a parse. Each function returns `None` when
/// it is not sure (an escape, a byte it did not expect); the parser then
/// decides, so valid JSON always gets the parser's answer.
mod scan {
    use super::{FIELDS, JSON_DEPTH};

    fn ws(b: &[u8], pos: &mut usize) {
        while matches!(b.get(*pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            *pos += 1;
        }
    }

    fn expect(b: &[u8], pos: &mut usize, c: u8) -> Option<()> {
        ws(b, pos);
        (b.get(*pos) == Some(&c)).then(|| *pos += 1)
    }

    /// A string without escapes or control bytes, at `pos` (its quote).
    fn plain_string<'b>(b: &'b [u8], pos: &mut usize) -> Option<&'b [u8]> {
        let start = *pos + 1;
        let len = memchr::memchr2(b'"', b'\\', b.get(start..)?)?;
        let s = &b[start..start + len];
        if b[start + len] != b'"' || s.iter().any(|&c| c < 0x20) {
            return None;
        }
        *pos = start + len + 1;
        Some(s)
    }

    /// Skips a string with any escapes (at its quote).
    fn skip_string(b: &[u8], pos: &mut usize) -> Option<()> {
        let mut i = *pos + 1;
        loop {
            i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
            if b[i] == b'\\' {
                i += 2;
                continue;
            }
            *pos = i + 1;
            return Some(());
        }
    }

    /// Skips any value at `pos`.
    fn skip_value(b: &[u8], pos: &mut usize) -> Option<()> {
        match *b.get(*pos)? {
            b'"' => skip_string(b, pos),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *b.get(*pos)? {
                        b'"' => {
                            skip_string(b, pos)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                *pos += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    *pos += 1;
                }
            }
            _ => {
                let start = *pos;
                while matches!(b.get(*pos), Some(c) if !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                {
                    *pos += 1;
                }
                let token = &b[start..*pos];
                let number = !token.is_empty()
                    && token
                        .iter()
                        .all(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
                (number || matches!(token, b"true" | b"false" | b"null")).then_some(())
            }
        }
    }

    /// The first level field of the object at `pos`: `Some(None)` when it
    /// has none, `None` when not sure.
    pub(super) fn object(b: &[u8], pos: &mut usize, depth: usize) -> Option<Option<String>> {
        expect(b, pos, b'{')?;
        ws(b, pos);
        if b.get(*pos) == Some(&b'}') {
            *pos += 1;
            return Some(None);
        }
        loop {
            ws(b, pos);
            if b.get(*pos) != Some(&b'"') {
                return None;
            }
            let key = plain_string(b, pos)?;
            expect(b, pos, b':')?;
            ws(b, pos);
            let first = *b.get(*pos)?;
            if FIELDS.iter().any(|f| f.as_bytes() == key) {
                // Only a string names a level; any other value is passed.
                if first == b'"' {
                    let value = plain_string(b, pos)?;
                    return Some(Some(std::str::from_utf8(value).ok()?.to_owned()));
                }
                skip_value(b, pos)?;
            } else if first == b'{' && depth < JSON_DEPTH {
                if let Some(found) = object(b, pos, depth + 1)? {
                    return Some(Some(found));
                }
            } else {
                skip_value(b, pos)?;
            }
            ws(b, pos);
            match b.get(*pos)? {
                b',' => *pos += 1,
                b'}' => {
                    *pos += 1;
                    return Some(None);
                }
                _ => return None,
            }
        }
    }
}

/// The value of the first level field (in [`FIELDS`] order) of a logfmt
/// line.
fn logfmt_level(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let mut best: Option<(usize, String)> = None;
    for token in text.split_ascii_whitespace() {
        let Some((key, value)) = token.split_once('=') else {
            continue;
        };
        if let Some(rank) = FIELDS.iter().position(|f| f.eq_ignore_ascii_case(key))
            && best.as_ref().is_none_or(|(r, _)| rank < *r)
        {
            best = Some((rank, value.trim_matches('"').to_owned()));
            if rank == 0 {
                break;
            }
        }
    }
    best.map(|(_, v)| v)
}

/// Loki's word rules, in its order: `info` anywhere wins first, then the
/// error, warning, critical and debug forms.
const WORDS: &[(Level, &[&str])] = &[
    (Level::Info, &["info", "INFO"]),
    (
        Level::Error,
        &["err:", "ERR:", "[err]", "[ERR]", "[error]", "[ERROR]"],
    ),
    (
        Level::Warn,
        &[
            "warn:",
            "WARN:",
            "[warn]",
            "[WARN]",
            "[warning]",
            "[WARNING]",
            "warning",
            "WARNING",
        ],
    ),
    (
        Level::Critical,
        &["critical:", "CRITICAL:", "[critical]", "[CRITICAL]"],
    ),
    (Level::Debug, &["debug", "DEBUG"]),
];

/// The word searchers, built once (a searcher per call would cost more
/// than the search). One SIMD search per word measured faster than one
/// aho-corasick pass for all of them, whose prefilter the short, common
/// words defeat (21% of catch-up against 10%).
static FINDERS: std::sync::LazyLock<Vec<(Level, Vec<memmem::Finder<'static>>)>> =
    std::sync::LazyLock::new(|| {
        WORDS
            .iter()
            .map(|(level, words)| {
                (
                    *level,
                    words
                        .iter()
                        .map(|w| memmem::Finder::new(w.as_bytes()))
                        .collect(),
                )
            })
            .collect()
    });

fn words(line: &[u8]) -> Level {
    FINDERS
        .iter()
        .find(|(_, finders)| finders.iter().any(|f| f.find(line).is_some()))
        .map_or(Level::Unknown, |(level, _)| *level)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_word_rules_agree_with_a_plain_search_for_each_word(
            line in "(info|INFO|err:|ERR|\\[err\\]|\\[error\\]|warn:|\\[warning\\]|WARNING|critical:|\\[CRITICAL|debug|DEBUG|[a-z\\[\\]:]| ){0,12}"
        ) {
            let line = line.as_bytes();
            let each = WORDS
                .iter()
                .find(|(_, list)| list.iter().any(|w| line.windows(w.len()).any(|x| x == w.as_bytes())))
                .map_or(Level::Unknown, |(level, _)| *level);
            proptest::prop_assert_eq!(words(line), each);
        }
    }

    /// JSON values whose keys are often level fields, some escaped, with
    /// strings that need escaping and objects nested past the depth.
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1e6f64..1e6).prop_map(|f| serde_json::json!(f)),
            any::<i32>().prop_map(|i| serde_json::json!(i)),
            "(info|warn|x\"y|\\|\n|é|[a-z]{0,6})".prop_map(Value::String),
        ];
        let object = |inner: BoxedStrategy<Value>| {
            prop::collection::vec(
                ("(level|lvl|severity|msg|ts|a|b|log\\.level|le\"vel)", inner),
                0..5,
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
        };
        let value = leaf.prop_recursive(10, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                object(inner.boxed()),
            ]
        });
        object(value.boxed())
    }

    proptest::proptest! {
        #[test]
        fn the_scan_agrees_with_the_parser_on_json(value in json_value(), spaced in proptest::bool::ANY) {
            let text = match spaced {
                true => serde_json::to_string_pretty(&value).unwrap(),
                false => serde_json::to_string(&value).unwrap(),
            };
            proptest::prop_assert_eq!(json_level(text.as_bytes()), json_level_parsed(&text));
        }
    }

    #[test]
    fn fields_then_words_as_loki() {
        let l = |s: &str| Level::of_line(s.as_bytes()).as_str();
        assert_eq!(l(r#"{"level":"ERROR","msg":"x"}"#), "error");
        assert_eq!(l(r#"{"msg":"x","log":{"level":"wrn"}}"#), "warn");
        assert_eq!(l(r#"{"severity":"fatal"}"#), "fatal");
        assert_eq!(
            l(r#"{"level":30,"msg":"x","lvl":"warn"}"#),
            "warn",
            "a string value counts"
        );
        assert_eq!(
            l(r#"{"a":{"b":{"severity":"dbg"}},"level":"info"}"#),
            "debug",
            "document order"
        );
        assert_eq!(
            l(r#"{"level":"error","msg":"cut short}"#),
            "error",
            "read up to the field"
        );
        assert_eq!(
            l(r#"{"msg":"x" "level":"error"}"#),
            "unknown",
            "broken before the field: words"
        );
        assert_eq!(
            l(r#"{"level":"notice","msg":"an info"}"#),
            "info",
            "unknown value: words"
        );
        assert_eq!(l("level=debug msg=hi"), "debug");
        assert_eq!(l("ts=1 lvl=err msg=x"), "error");
        assert_eq!(l("ts=1 LEVEL=Warning"), "warn");
        assert_eq!(l("2024 [ERROR] disk full"), "error");
        assert_eq!(l("something WARN: low"), "warn");
        assert_eq!(l("INFO [ERROR] both"), "info", "info is looked for first");
        assert_eq!(l("CRITICAL: down"), "critical");
        assert_eq!(l("debug output"), "debug");
        assert_eq!(l("plain line"), "unknown");
        assert_eq!(l(""), "unknown");
        assert_eq!(l("ERROR alone is not a word rule"), "unknown");
    }

    #[test]
    fn stream_labels_and_normalising() {
        assert_eq!(normalize("WARNING"), "warn");
        assert_eq!(normalize("notice"), "notice");
        let labels = |n: &str| (n == "severity").then_some("Error");
        assert_eq!(from_labels(labels), Some("Error"));
        assert_eq!(from_labels(|_| None), None);
        assert_eq!(Level::from_byte(Level::Fatal as u8), Level::Fatal);
        assert_eq!(Level::from_byte(200), Level::Unknown);
    }
}
