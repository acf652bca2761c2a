//! Label sets: what names a stream.

use std::fmt;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// The stable identity of a stream: a hash of its sorted label set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId(pub u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A stream's label set: `name=value` pairs sorted by name, names unique and
/// valid per Prometheus/Loki (`[a-zA-Z_][a-zA-Z0-9_]*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// A set that only names `name` (with an empty value): how Loki writes
    /// the volume of a label name (`index/volume?aggregateBy=labels`).
    pub fn name_only(name: &str) -> Self {
        Self(vec![(sanitize_name(name), String::new())])
    }

    /// Builds a label set: names are sanitized, pairs sorted, and for a name
    /// given twice the last value wins. Empty values are dropped (an empty
    /// label is the same as no label, as in Loki).
    pub fn new<N: AsRef<str>, V: Into<String>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut v: Vec<(String, String)> = Vec::new();
        for (name, value) in pairs {
            let name = sanitize_name(name.as_ref());
            let value = value.into();
            match v.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value,
                None => v.push((name, value)),
            }
        }
        v.retain(|(_, value)| !value.is_empty());
        v.sort();
        Self(v)
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// The pairs, owned (to change and build a new set from).
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.0.clone()
    }

    /// The labels whose name is in `names` (`listed`), or is not
    /// (`!listed`): `by` / `on` keep the listed ones, `without` /
    /// `ignoring` the others.
    pub fn filtered(&self, names: &[String], listed: bool) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| names.iter().any(|l| l == n) == listed)
                .cloned()
                .collect(),
        )
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stable identity of this label set.
    pub fn stream_id(&self) -> StreamId {
        let mut buf = Vec::with_capacity(64);
        for (n, v) in &self.0 {
            buf.extend_from_slice(n.as_bytes());
            buf.push(0xff);
            buf.extend_from_slice(v.as_bytes());
            buf.push(0xfe);
        }
        StreamId(xxh3_64(&buf))
    }
}

impl fmt::Display for Labels {
    /// Renders as a LogQL selector: `{a="1", b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// Turns any string into a valid label name: characters outside
/// `[a-zA-Z0-9_]` become `_`, and a leading digit gets a `_` prefix, so
/// `app.kubernetes.io/name` becomes `app_kubernetes_io_name`.
pub fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_pairs_sorted() {
        let l = Labels::new([
            ("pod_name", "web-1"),
            ("app.kubernetes.io/name", "web"),
            ("9lives", "x"),
        ]);
        let names: Vec<&str> = l.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["_9lives", "app_kubernetes_io_name", "pod_name"]);
        assert_eq!(l.get("app_kubernetes_io_name"), Some("web"));
        assert_eq!(
            l.to_string(),
            r#"{_9lives="x", app_kubernetes_io_name="web", pod_name="web-1"}"#
        );
    }

    #[test]
    fn identity_ignores_order_and_separates_fields() {
        let a = Labels::new([("a", "1"), ("b", "2")]);
        let b = Labels::new([("b", "2"), ("a", "1")]);
        assert_eq!(a.stream_id(), b.stream_id());
        let c = Labels::new([("a", "12")]);
        let d = Labels::new([("a", "1"), ("_2", "")]);
        assert_ne!(c.stream_id(), Labels::new([("a", "1")]).stream_id());
        assert_eq!(d, Labels::new([("a", "1")]), "empty values are no labels");
    }
}
