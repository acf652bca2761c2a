//! Loki's pattern expressions (`<ip> - - <_> "<method> <uri> <_>"`): the
//! `pattern` parser extracts the captures, the `|>` / `!>` line filters
//! test whether a line has the shape.

use memchr::memmem;

/// One piece of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    /// Text that must appear as is.
    Literal(Vec<u8>),
    /// `<name>`, or `<_>` (`None`) which skips what it matches.
    Capture(Option<String>),
}

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    nodes: Vec<Node>,
    names: Vec<String>,
}

/// Why a pattern is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    /// Two captures with nothing between them cannot be told apart.
    #[error("the pattern has two consecutive captures; put literal text between them")]
    Consecutive,
    /// The `pattern` parser needs something to extract.
    #[error("the pattern has no named capture like <name>")]
    NoNamedCapture,
    /// A name captured twice.
    #[error("the capture <{0}> appears twice in the pattern")]
    Duplicate(String),
}

fn capture_at(text: &str) -> Option<(Option<String>, usize)> {
    let rest = text.strip_prefix('<')?;
    let end = rest.find('>')?;
    let name = &rest[..end];
    let valid = name == "_"
        || (name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    valid.then(|| ((name != "_").then(|| name.to_owned()), end + 2))
}

impl Pattern {
    /// A pattern for the `|>` / `!>` line filters: any shape, named or not.
    pub fn filter(text: &str) -> Result<Self, PatternError> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some((name, len)) = capture_at(rest) {
                if matches!(nodes.last(), Some(Node::Capture(_))) {
                    return Err(PatternError::Consecutive);
                }
                nodes.push(Node::Capture(name));
                rest = &rest[len..];
                continue;
            }
            let c = rest.chars().next().expect("rest is not empty");
            match nodes.last_mut() {
                Some(Node::Literal(text)) => {
                    text.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes())
                }
                _ => nodes.push(Node::Literal(
                    c.encode_utf8(&mut [0; 4]).as_bytes().to_vec(),
                )),
            }
            rest = &rest[c.len_utf8()..];
        }
        let mut names: Vec<String> = Vec::new();
        for node in &nodes {
            if let Node::Capture(Some(name)) = node {
                if names.contains(name) {
                    return Err(PatternError::Duplicate(name.clone()));
                }
                names.push(name.clone());
            }
        }
        Ok(Self { nodes, names })
    }

    /// A pattern for the `pattern` parser: it must name a capture.
    pub fn parser(text: &str) -> Result<Self, PatternError> {
        let pattern = Self::filter(text)?;
        if pattern.names.is_empty() {
            return Err(PatternError::NoNamedCapture);
        }
        Ok(pattern)
    }

    /// The named captures, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The literal pieces: a line without one of them cannot match.
    pub fn literals(&self) -> impl Iterator<Item = &[u8]> {
        self.nodes.iter().filter_map(|n| match n {
            Node::Literal(text) => Some(text.as_slice()),
            Node::Capture(_) => None,
        })
    }

    /// The named captures of `line`, in order, as far as the line matches:
    /// anchored at the start; each capture runs to the first occurrence of
    /// the next literal, or to the end of the line when it is missing.
    pub fn captures<'a>(&self, line: &'a [u8]) -> Vec<(&str, &'a [u8])> {
        let mut out = Vec::new();
        if line.is_empty() {
            return out;
        }
        let mut input = line;
        let mut nodes = self.nodes.as_slice();
        if let Some((Node::Literal(text), tail)) = nodes.split_first() {
            if !input.starts_with(text) {
                return out;
            }
            input = &input[text.len()..];
            nodes = tail;
        }
        while let Some((Node::Capture(name), tail)) = nodes.split_first() {
            let Some((Node::Literal(text), after)) = tail.split_first() else {
                // The pattern ends on a capture: it takes the rest.
                if let Some(name) = name {
                    out.push((name.as_str(), input));
                }
                return out;
            };
            let Some(at) = memmem::find(input, text) else {
                if let Some(name) = name {
                    out.push((name.as_str(), input));
                }
                return out;
            };
            if let Some(name) = name {
                out.push((name.as_str(), &input[..at]));
            }
            input = &input[at + text.len()..];
            nodes = after;
        }
        out
    }

    /// Whether `line` has the shape: every literal in order, no capture
    /// empty, and nothing left over unless the pattern ends on a capture.
    pub fn matches(&self, line: &[u8]) -> bool {
        if line.is_empty() || self.nodes.is_empty() {
            return line.is_empty() && self.nodes.is_empty();
        }
        let mut offset = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            let Node::Literal(text) = node else { continue };
            let Some(at) = memmem::find(&line[offset..], text) else {
                return false;
            };
            if i == 0 && at != 0 {
                return false;
            }
            if i != 0 && at == 0 {
                // An empty capture before this literal.
                return false;
            }
            offset += at + text.len();
        }
        let ends_on_capture = matches!(self.nodes.last(), Some(Node::Capture(_)));
        ends_on_capture == (offset != line.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pattern: &str, line: &str) -> Vec<(String, String)> {
        Pattern::parser(pattern)
            .unwrap()
            .captures(line.as_bytes())
            .into_iter()
            .map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    #[test]
    fn the_documented_nginx_example() {
        let line = r#"0.191.12.2 - - [10/Jun/2021:09:14:29 +0000] "GET /api/plugins/versioncheck HTTP/1.1" 200 2 "-" "Go-http-client/2.0" "13.76.247.102, 34.120.177.193" "TLSv1.2" "US" """#;
        let got = caps(
            r#"<ip> - - <_> "<method> <uri> <_>" <status> <size> <_> "<agent>" <_>"#,
            line,
        );
        let want = [
            ("ip", "0.191.12.2"),
            ("method", "GET"),
            ("uri", "/api/plugins/versioncheck"),
            ("status", "200"),
            ("size", "2"),
            ("agent", "Go-http-client/2.0"),
        ];
        assert_eq!(
            got,
            want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
        );
    }

    #[test]
    fn anchored_at_the_start_and_partial_at_the_end() {
        let line = r#"level=debug ts=2021 msg="POST /loki/api/v1/push (204) 16.652862ms""#;
        let got = caps(r#"<_> msg="<method> <path> (<status>) <latency>""#, line);
        assert_eq!(got[0], ("method".into(), "POST".into()));
        assert_eq!(got[3], ("latency".into(), "16.652862ms".into()));
        assert!(
            caps("msg=<m>", line).is_empty(),
            "the literal must start the line"
        );
        assert_eq!(
            caps("<a> missing <b>", "x y")[0],
            ("a".into(), "x y".into())
        );
    }

    #[test]
    fn validation() {
        assert_eq!(
            Pattern::parser("<a><b>").unwrap_err(),
            PatternError::Consecutive
        );
        assert_eq!(
            Pattern::parser("<_> x").unwrap_err(),
            PatternError::NoNamedCapture
        );
        assert_eq!(
            Pattern::parser("<a> <a>").unwrap_err(),
            PatternError::Duplicate("a".into())
        );
        assert!(Pattern::filter("<_> error <_>").is_ok());
        // `<1x>` is not a capture: literal text.
        assert!(Pattern::parser("<1x> <a>").is_ok());
    }

    #[test]
    fn line_shape_tests() {
        let p = |s: &str| Pattern::filter(s).unwrap();
        assert!(p("<_> baz").matches(b"foo bar baz"));
        assert!(!p("<_> bar").matches(b"foo bar baz"));
        assert!(p("foo <_>").matches(b"foo bar baz"));
        assert!(!p("<_> bar <_>").matches(b" bar "));
        assert!(p("<_>bar<_>").matches(b" bar "));
        assert!(p("<_> error <_>").matches(b"an error here"));
        assert!(!p("<_> error <_>").matches(b"no problem"));
    }
}
