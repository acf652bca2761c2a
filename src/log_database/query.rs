//! What a query asks for: stream matchers, a time range, line filters.

use memchr::memmem::Finder;
use regex::bytes::Regex as BytesRegex;
use regex::{Regex, RegexBuilder};

use super::labels::Labels;

/// How a matcher compares a label's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    Regex,
    /// `!~` (fully anchored)
    NotRegex,
}

/// Errors in what a query asks for: the client's mistake, worded for them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// A regular expression did not compile.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    BadRegex {
        /// The pattern as given.
        pattern: String,
        /// What the regex engine said.
        reason: String,
    },
    /// Every matcher matches the empty string, so the query would select
    /// every stream.
    #[error(
        "the selector must have at least one matcher that does not match the empty string, \
         e.g. {{namespace=\"default\"}}"
    )]
    EmptySelector,
    /// `start` is after `end`.
    #[error("the start of the time range is after its end")]
    BadRange,
}

/// Regexes are compiled with bounded size so a query cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn compile(pattern: &str) -> Result<Regex, QueryError> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| QueryError::BadRegex {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })
}

/// One stream matcher, e.g. `app=~"web.*"`.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or pattern.
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// A matcher; regexes are compiled (anchored) here.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, QueryError> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(compile(value)?),
            _ => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// A convenience for `name="value"`.
    pub fn equal(name: &str, value: &str) -> Self {
        Self::new(name, MatchOp::Equal, value).expect("equality never fails")
    }

    /// Whether a value (empty when the label is missing) matches.
    pub fn matches_value(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Whether a stream's labels match.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).unwrap_or(""))
    }
}

/// Checks that a selector does not select everything.
pub fn validate_selector(selector: &[Matcher]) -> Result<(), QueryError> {
    if selector.iter().any(|m| !m.matches_value("")) {
        Ok(())
    } else {
        Err(QueryError::EmptySelector)
    }
}

/// A line test the query language defines (pattern and IP filters), run
/// by the store like the built-in filters.
pub trait LineTest: std::fmt::Debug + Send + Sync {
    /// Whether a line passes.
    fn keeps(&self, line: &[u8]) -> bool;

    /// Whether a block whose lines are `data` (back to back) may hold a
    /// line that passes; `true` when unsure.
    fn may_match(&self, data: &[u8]) -> bool {
        let _ = data;
        true
    }

    /// Text that tells this test apart from every other (its source, say),
    /// so that what it kept of a block can be remembered; `None` when it
    /// has none, and then nothing is remembered.
    fn cache_key(&self) -> Option<String> {
        None
    }
}

/// A filter on line content.
#[derive(Clone, Debug)]
pub enum LineFilter {
    /// `|= "text"`
    Contains(Finder<'static>),
    /// `!= "text"`
    NotContains(Finder<'static>),
    /// `|~ "re"` (unanchored, like Loki)
    Regex(BytesRegex),
    /// `!~ "re"`
    NotRegex(BytesRegex),
    /// `|= "a" or "b"`: any of them.
    Any(Vec<LineFilter>),
    /// A test of the query language (`|> "<_> x"`, `|= ip("10.0.0.0/8")`).
    Test(std::sync::Arc<dyn LineTest>),
}

impl LineFilter {
    /// `|= "text"` (or `!= "text"` when `negate`).
    pub fn contains(needle: &[u8], negate: bool) -> Self {
        let finder = Finder::new(needle).into_owned();
        if negate {
            Self::NotContains(finder)
        } else {
            Self::Contains(finder)
        }
    }

    /// A needle every kept line must contain, if this filter has one: the
    /// store then searches a block for it once instead of every line.
    pub fn required(&self) -> Option<&Finder<'static>> {
        match self {
            // The empty needle is in every line, including empty ones.
            Self::Contains(finder) if !finder.needle().is_empty() => Some(finder),
            _ => None,
        }
    }

    /// Whether a block whose line bytes are `data` (back to back) can
    /// hold a line this filter keeps: a block without a required needle
    /// anywhere is skipped whole.
    pub fn may_match(&self, data: &[u8]) -> bool {
        match self {
            // The empty needle is in every line, including empty ones.
            Self::Contains(finder) => finder.needle().is_empty() || finder.find(data).is_some(),
            Self::Any(branches) => branches.iter().any(|b| b.may_match(data)),
            Self::Test(test) => test.may_match(data),
            _ => true,
        }
    }

    /// A regex filter (`negate` for `!~`), compiled with bounded size.
    pub fn regex(pattern: &str, negate: bool) -> Result<Self, QueryError> {
        let re = regex::bytes::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| QueryError::BadRegex {
                pattern: pattern.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(if negate {
            Self::NotRegex(re)
        } else {
            Self::Regex(re)
        })
    }

    /// Appends text that tells this filter apart from every other: what it
    /// kept of a block is remembered under it. False when it has none.
    fn cache_key(&self, out: &mut String) -> bool {
        use std::fmt::Write;
        // Each part is length-prefixed, so no two filter lists share a key.
        let mut part = |kind: &str, text: &str| {
            let _ = write!(out, "{kind}{}:{text}", text.len());
        };
        match self {
            Self::Contains(f) => part("c", &f.needle().escape_ascii().to_string()),
            Self::NotContains(f) => part("n", &f.needle().escape_ascii().to_string()),
            Self::Regex(re) => part("r", re.as_str()),
            Self::NotRegex(re) => part("x", re.as_str()),
            Self::Test(test) => match test.cache_key() {
                Some(key) => part("t", &key),
                None => return false,
            },
            Self::Any(branches) => {
                let _ = write!(out, "a{}(", branches.len());
                if !branches.iter().all(|b| b.cache_key(out)) {
                    return false;
                }
                out.push(')');
            }
        }
        true
    }

    /// Whether a line passes.
    pub fn keeps(&self, line: &[u8]) -> bool {
        match self {
            Self::Contains(finder) => finder.find(line).is_some(),
            Self::NotContains(finder) => finder.find(line).is_none(),
            Self::Regex(re) => re.is_match(line),
            Self::NotRegex(re) => !re.is_match(line),
            Self::Any(branches) => branches.iter().any(|b| b.keeps(line)),
            Self::Test(test) => test.keeps(line),
        }
    }
}

/// Which end of the range comes first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// A log query.
#[derive(Clone, Debug)]
pub struct Query {
    /// Stream matchers, all of which must match.
    pub selector: Vec<Matcher>,
    /// Start of the range, ns, inclusive.
    pub start: i64,
    /// End of the range, ns, exclusive.
    pub end: i64,
    /// Order of results.
    pub direction: Direction,
    /// At most this many entries.
    pub limit: usize,
    /// Line filters, all of which must pass.
    pub filters: Vec<LineFilter>,
}

impl Query {
    /// A query for `selector` over all time, oldest first, no limit.
    pub fn new(selector: Vec<Matcher>) -> Self {
        Self {
            selector,
            start: i64::MIN,
            end: i64::MAX,
            direction: Direction::Forward,
            limit: usize::MAX,
            filters: Vec::new(),
        }
    }

    /// Checks the selector and range.
    pub fn validate(&self) -> Result<(), QueryError> {
        validate_selector(&self.selector)?;
        if self.start > self.end {
            return Err(QueryError::BadRange);
        }
        Ok(())
    }

    /// Whether a line passes every filter.
    pub fn keeps(&self, line: &[u8]) -> bool {
        self.filters.iter().all(|f| f.keeps(line))
    }

    /// The filters as text that tells them apart from any others, when
    /// there are some and each has such a text: what they kept of a block
    /// is remembered under it.
    pub fn filter_key(&self) -> Option<std::sync::Arc<str>> {
        let mut key = String::new();
        (!self.filters.is_empty() && self.filters.iter().all(|f| f.cache_key(&mut key)))
            .then(|| key.into())
    }

    /// Whether a block whose line bytes are `data` (back to back) can hold a
    /// kept line at all: one search over the block instead of one per line.
    pub fn may_match(&self, data: &[u8]) -> bool {
        self.filters.iter().all(|f| f.may_match(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_matchers_are_anchored_and_bounded() {
        let m = Matcher::new("app", MatchOp::Regex, "web.*").unwrap();
        assert!(m.matches_value("web-1"));
        assert!(!m.matches_value("my-web"));
        assert!(Matcher::new("app", MatchOp::Regex, "(").is_err());
        assert!(Matcher::new("app", MatchOp::Regex, "a{100000}{100000}").is_err());
        let missing = Matcher::new("team", MatchOp::NotEqual, "x").unwrap();
        assert!(missing.matches(&Labels::new([("app", "web")])));
    }

    #[test]
    fn an_empty_needle_keeps_every_line() {
        let f = LineFilter::contains(b"", false);
        assert!(f.may_match(b""));
        assert!(f.keeps(b""));
        let any = LineFilter::Any(vec![
            LineFilter::contains(b"a", false),
            LineFilter::contains(b"b", false),
        ]);
        assert!(any.may_match(b"xxb") && !any.may_match(b"xyz"));
    }

    #[test]
    fn filter_keys_tell_filter_lists_apart() {
        let key = |filters: Vec<LineFilter>| {
            let mut q = Query::new(vec![Matcher::equal("app", "web")]);
            q.filters = filters;
            q.filter_key()
        };
        let c = |s: &str| LineFilter::contains(s.as_bytes(), false);
        assert_eq!(key(vec![]), None, "no filters: nothing to remember");
        let one = key(vec![c("a1:b")]).unwrap();
        let two = key(vec![c("a"), c("b")]).unwrap();
        assert_ne!(one, two);
        assert_ne!(
            key(vec![c("error")]),
            key(vec![LineFilter::contains(b"error", true)])
        );
        assert_ne!(
            key(vec![c("x")]),
            key(vec![LineFilter::regex("x", false).unwrap()])
        );
        assert_ne!(
            key(vec![LineFilter::Any(vec![c("a"), c("b")])]),
            key(vec![c("a"), c("b")])
        );
        assert_eq!(key(vec![c("error")]), key(vec![c("error")]));
        #[derive(Debug)]
        struct Opaque;
        impl LineTest for Opaque {
            fn keeps(&self, _: &[u8]) -> bool {
                true
            }
        }
        let opaque = LineFilter::Test(std::sync::Arc::new(Opaque));
        assert_eq!(key(vec![c("a"), opaque]), None);
    }

    #[test]
    fn a_selector_needs_a_non_empty_matcher() {
        let all = vec![Matcher::new("app", MatchOp::Regex, ".*").unwrap()];
        assert_eq!(validate_selector(&all), Err(QueryError::EmptySelector));
        assert!(validate_selector(&[Matcher::equal("app", "web")]).is_ok());
    }
}
