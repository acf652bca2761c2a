//! Loki's push API as Promtail and Alloy send it: `POST
//! /loki/api/v1/push`, a snappy-compressed `logproto.PushRequest`. Which
//! labels are stream labels is a choice: by default the built-in ones
//! (namespace, pod, container, node, stream, service_name, path), with pod
//! labels and the container id as structured metadata, as Loki's
//! cardinality advice has it.

use std::fmt::Write;

use prost::Message;

use super::batch::Batch;
use super::reuse::{Pool, fit, set, set_text};
use crate::log_database::labels::Labels;

/// The types generated from Loki's `push.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/logproto.rs"));
}

/// Stream labels unless `--loki-stream-labels` says otherwise.
pub const DEFAULT_STREAM_LABELS: &[&str] = &[
    "namespace",
    "pod_name",
    "pod",
    "container_name",
    "container",
    "node_name",
    "stream",
    "service_name",
    "path",
];

/// How streams become Loki streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LokiLabels {
    /// The labels kept as stream labels; the others go as structured
    /// metadata.
    pub stream: Vec<String>,
    /// Labels added to every stream (e.g. `cluster`).
    pub extra: Vec<(String, String)>,
}

impl Default for LokiLabels {
    fn default() -> Self {
        Self {
            stream: DEFAULT_STREAM_LABELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            extra: Vec::new(),
        }
    }
}

impl LokiLabels {
    /// The Loki stream labels and the structured metadata of `labels`.
    fn split<'a>(&self, labels: &'a Labels) -> (Labels, Vec<(&'a str, &'a str)>) {
        let mut stream: Vec<(String, String)> = self.extra.clone();
        let mut metadata = Vec::new();
        for (name, value) in labels.iter() {
            if self.stream.iter().any(|s| s == name) {
                stream.push((name.to_owned(), value.to_owned()));
            } else {
                metadata.push((name, value));
            }
        }
        (Labels::new(stream), metadata)
    }
}

/// Builds Loki push bodies, each in the last one's buffers.
#[derive(Debug, Default)]
pub struct Encoder {
    request: proto::PushRequest,
    raw: Vec<u8>,
    compressed: Vec<u8>,
    streams: Pool<proto::StreamAdapter>,
    entries: Pool<proto::EntryAdapter>,
}

impl Encoder {
    /// The snappy-compressed `PushRequest` of `batch`.
    pub fn encode(&mut self, batch: &Batch, labels: &LokiLabels) -> &[u8] {
        self.fill(batch, labels);
        self.raw.clear();
        // Into a growable buffer, encoding cannot fail.
        let _ = self.request.encode(&mut self.raw);
        self.compressed
            .resize(snap::raw::max_compress_len(self.raw.len()), 0);
        let n = snap::raw::Encoder::new()
            .compress(&self.raw, &mut self.compressed)
            .unwrap_or(0);
        &self.compressed[..n]
    }

    /// Fills the request with `batch`: one Loki stream per stream.
    fn fill(&mut self, batch: &Batch, labels: &LokiLabels) {
        let n = batch.streams.len();
        // Streams not needed now keep no entries: other streams take them.
        for stream in self.request.streams.iter_mut().skip(n) {
            self.entries.give(&mut stream.entries);
        }
        let streams = self.streams.fit(&mut self.request.streams, n);
        for (out, stream) in streams.iter_mut().zip(&batch.streams) {
            let (stream_labels, metadata) = labels.split(&stream.labels);
            // Prometheus text form, as Loki parses it.
            out.labels.clear();
            let _ = write!(out.labels, "{stream_labels}");
            let entries = self.entries.fit(&mut out.entries, stream.items.len());
            for (entry, item) in entries.iter_mut().zip(&stream.items) {
                let timestamp = entry.timestamp.get_or_insert_with(Default::default);
                timestamp.seconds = item.ts.div_euclid(1_000_000_000);
                timestamp.nanos = item.ts.rem_euclid(1_000_000_000) as i32;
                set_text(&mut entry.line, batch.line(item));
                let pairs = fit(&mut entry.structured_metadata, metadata.len());
                for (pair, (name, value)) in pairs.iter_mut().zip(&metadata) {
                    set(&mut pair.name, name);
                    set(&mut pair.value, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_and_container_ids_are_metadata_by_default() {
        let labels = Labels::new([
            ("namespace", "shop"),
            ("pod_name", "web-1"),
            ("container_id", "containerd://abc"),
            ("app", "web"),
        ]);
        let policy = LokiLabels {
            extra: vec![("cluster".into(), "prod".into())],
            ..LokiLabels::default()
        };
        let (stream, metadata) = policy.split(&labels);
        assert_eq!(
            stream.to_string(),
            r#"{cluster="prod", namespace="shop", pod_name="web-1"}"#
        );
        let names: Vec<&str> = metadata.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["app", "container_id"]);
    }
}
