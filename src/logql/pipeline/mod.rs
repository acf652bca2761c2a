//! Runs a log query's pipeline on entries: parsers, label filters,
//! formatters, `drop` / `keep`, the line filters the store could not take,
//! and the `unwrap` that turns an entry into a sample.
//!
//! Leading line filters go to the store (where whole blocks are skipped);
//! parsers extract only the labels the rest of the query reads when the
//! caller says which labels it needs (Loki's parser hints).

mod labels;
mod parsers;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::ast::{Conversion, LogExpr, Stage, Unwrap};
use super::convert::{parse_float, parse_go_duration, parse_humanized_bytes};
use super::template::Context;
use crate::log_database::labels::Labels;
use crate::log_database::level::{self, Level};
use crate::log_database::query::{Direction, Query};

/// The name Loki gives the error label.
pub const ERROR: &str = "__error__";
/// The name Loki gives the error's details.
pub const ERROR_DETAILS: &str = "__error_details__";

/// The stages left after the store has applied the leading line filters.
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
    unwrap: Option<Unwrap>,
    /// The labels parsers extract; `None` for all of them.
    wanted: Option<Arc<HashSet<String>>>,
    levels: LevelLabels,
}

/// A stream's labels with an entry's `detected_level` added (Loki shows
/// structured metadata among the labels), made once per stream and level
/// and shared by every entry that has them.
#[derive(Clone, Debug, Default)]
struct LevelLabels(Arc<Mutex<HashMap<(usize, Level), LevelEntry>>>);

/// The stream's labels (kept so their address cannot be reused while the
/// entry is cached) and the labels with the level.
type LevelEntry = (Arc<Labels>, Arc<Labels>);

/// Distinct stream and level pairs kept before the cache starts over.
const LEVEL_CACHE: usize = 4096;

impl LevelLabels {
    fn get(&self, stream: &Arc<Labels>, level: Level) -> Arc<Labels> {
        let key = (Arc::as_ptr(stream) as usize, level);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, labels)) = map.get(&key) {
            return labels.clone();
        }
        if map.len() >= LEVEL_CACHE {
            map.clear();
        }
        // A stream that says its level in a label has that level (Loki
        // looks at labels before the line).
        let value = level::from_labels(|n| stream.get(n))
            .map(level::normalize)
            .unwrap_or_else(|| level.as_str().to_owned());
        let pairs = stream
            .to_pairs()
            .into_iter()
            .chain([(level::LABEL.to_owned(), value)]);
        let labels = Arc::new(Labels::new(pairs));
        map.insert(key, (stream.clone(), labels.clone()));
        labels
    }
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
                unwrap: self.unwrap.clone(),
                wanted: None,
                levels: LevelLabels::default(),
            },
        )
    }

    /// Like [`plan`](Self::plan), for a metric query whose series keep
    /// only `needed` labels: parsers then extract just those and the ones
    /// the pipeline itself reads.
    pub fn plan_for(&self, start: i64, end: i64, needed: Option<&[String]>) -> (Query, Pipeline) {
        let (query, mut pipeline) = self.plan(start, end, Direction::Forward);
        if let Some(needed) = needed {
            let mut names: HashSet<String> = needed.iter().cloned().collect();
            if labels::read_by(&pipeline.stages, pipeline.unwrap.as_ref(), &mut names) {
                pipeline.wanted = Some(Arc::new(names));
            }
        }
        (query, pipeline)
    }
}

/// What an entry looks like after the pipeline.
pub struct Processed<'a> {
    /// The labels: the stream's, with the entry's structured metadata
    /// (`detected_level`), changed by the pipeline.
    pub labels: Arc<Labels>,
    /// The stream's own labels, for answers that keep the categories
    /// apart (Loki's `categorize-labels`).
    pub stream: Arc<Labels>,
    /// The line, possibly rewritten.
    pub line: Cow<'a, [u8]>,
    /// The unwrapped value, for an unwrap pipeline.
    pub value: f64,
}

/// One entry on its way through the stages: its stream's labels (`'s`,
/// with the entry's `detected_level`) and its line (`'l`).
pub(crate) struct Entry<'s, 'l> {
    stream: &'s Labels,
    /// The labels once a stage changed them; `None` while they are the
    /// stream's.
    pub(super) labels: Option<Vec<(String, String)>>,
    error: Option<String>,
    details: Option<String>,
    line: Cow<'l, [u8]>,
    timestamp: i64,
}

impl<'s, 'l> Entry<'s, 'l> {
    fn new(stream: &'s Labels, timestamp: i64, line: &'l [u8]) -> Self {
        Self {
            stream,
            labels: None,
            error: None,
            details: None,
            line: Cow::Borrowed(line),
            timestamp,
        }
    }

    /// A label's value; `__error__` and `__error_details__` included.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        match name {
            ERROR => self.error.as_deref(),
            ERROR_DETAILS => self.details.as_deref(),
            _ => match &self.labels {
                Some(pairs) => pairs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str()),
                None => self.stream.get(name),
            },
        }
    }

    /// Whether the stream itself has `name` (parsers then add
    /// `_extracted`).
    pub(crate) fn stream_has(&self, name: &str) -> bool {
        self.stream.get(name).is_some()
    }

    fn pairs(&mut self) -> &mut Vec<(String, String)> {
        let stream = self.stream;
        self.labels.get_or_insert_with(|| stream.to_pairs())
    }

    /// Sets a label.
    pub(crate) fn set(&mut self, name: &str, value: String) {
        match name {
            ERROR => self.error = Some(value),
            ERROR_DETAILS => self.details = Some(value),
            _ => {
                let pairs = self.pairs();
                match pairs.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = value,
                    None => pairs.push((name.to_owned(), value)),
                }
            }
        }
    }

    /// Removes a label.
    pub(crate) fn remove(&mut self, name: &str) {
        match name {
            ERROR => self.error = None,
            ERROR_DETAILS => self.details = None,
            _ => {
                if self.get(name).is_some() {
                    self.pairs().retain(|(n, _)| n != name);
                }
            }
        }
    }

    /// Keeps only the labels `keep` says yes to (not the error labels).
    pub(crate) fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) {
        self.pairs().retain(|(n, v)| keep(n, v));
    }

    /// Marks the entry with an error, unless it already has one (the
    /// first error is the one reported, as in Loki).
    pub(crate) fn fail(&mut self, error: &str, details: String) {
        if self.error.is_none() {
            self.error = Some(error.to_owned());
            self.details = Some(details);
        }
    }

    pub(crate) fn line(&self) -> &[u8] {
        &self.line
    }

    pub(crate) fn set_line(&mut self, line: Vec<u8>) {
        self.line = Cow::Owned(line);
    }

    fn labels_out(self, stream: &Arc<Labels>, drop: Option<&str>) -> (Arc<Labels>, Cow<'l, [u8]>) {
        if self.labels.is_none() && self.error.is_none() && drop.is_none() {
            return (stream.clone(), self.line);
        }
        let mut pairs = self.labels.unwrap_or_else(|| stream.to_pairs());
        if let Some(name) = drop {
            pairs.retain(|(n, _)| n != name);
        }
        pairs.extend(self.error.map(|e| (ERROR.to_owned(), e)));
        pairs.extend(self.details.map(|d| (ERROR_DETAILS.to_owned(), d)));
        (Arc::new(Labels::new(pairs)), self.line)
    }
}

impl Context for Entry<'_, '_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.get(name)
    }

    fn labels(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = match &self.labels {
            Some(pairs) => pairs.clone(),
            None => self.stream.to_pairs(),
        };
        pairs.extend(self.error.clone().map(|e| (ERROR.to_owned(), e)));
        pairs.sort();
        pairs
    }

    fn line(&self) -> &[u8] {
        &self.line
    }

    fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

/// Converts an unwrapped label value as Loki's `unwrap` does.
fn convert(conversion: Conversion, value: &str) -> Result<f64, String> {
    let parsed = match conversion {
        Conversion::Float => parse_float(value),
        Conversion::Duration => parse_go_duration(value),
        Conversion::Bytes => parse_humanized_bytes(value),
    };
    parsed.ok_or_else(|| match conversion {
        Conversion::Float => format!("strconv.ParseFloat: parsing {value:?}: invalid syntax"),
        Conversion::Duration => format!("time: invalid duration {value:?}"),
        Conversion::Bytes => format!("unhandled size name: {value:?}"),
    })
}

pub use parsers::DetectedField;

/// The fields of one line, as Loki's `detected_fields` finds them: the
/// `json` parser's, else the `logfmt` parser's, named as those parsers
/// name them next to `stream`'s labels.
pub fn detect_fields(stream: &Labels, line: &[u8]) -> Option<(&'static str, Vec<DetectedField>)> {
    let mut entry = Entry::new(stream, 0, line);
    parsers::detect(&mut entry)
}

impl Pipeline {
    /// Whether the pipeline leaves every entry as it is.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty() && self.unwrap.is_none()
    }

    /// Runs the pipeline on one entry of the stream `labels` with its
    /// detected `level`; `None` when a stage drops it (or, for an unwrap,
    /// when the entry has no value to unwrap).
    pub fn process<'a>(
        &self,
        labels: &Arc<Labels>,
        timestamp: i64,
        line: &'a [u8],
        level: Level,
    ) -> Option<Processed<'a>> {
        let stream = labels;
        let labels = self.levels.get(stream, level);
        if self.is_empty() {
            return Some(Processed {
                labels,
                stream: stream.clone(),
                line: Cow::Borrowed(line),
                value: 0.0,
            });
        }
        let mut entry = Entry::new(&labels, timestamp, line);
        let wanted = self.wanted.as_deref();
        for stage in &self.stages {
            if !labels::run(stage, &mut entry, wanted) {
                return None;
            }
        }
        let mut value = 0.0;
        let mut drop = None;
        if let Some(unwrap) = &self.unwrap {
            // A line without the label has no sample (Loki issue 6713).
            let raw = entry
                .get(&unwrap.label)
                .filter(|v| !v.is_empty())?
                .to_owned();
            match convert(unwrap.conversion, &raw) {
                Ok(v) => value = v,
                Err(details) => entry.fail("SampleExtractionErr", details),
            }
            for predicate in &unwrap.post {
                if !labels::holds(predicate, &mut entry) {
                    return None;
                }
            }
            drop = Some(unwrap.label.as_str());
        }
        let (labels, line) = entry.labels_out(&labels, drop);
        Some(Processed {
            labels,
            stream: stream.clone(),
            line,
            value,
        })
    }
}
