//! Loki's push API as Promtail and Alloy send it: `POST
//! /loki/api/v1/push`, a snappy-compressed `logproto.PushRequest`. Which
//! labels are stream labels is a choice: by default the built-in ones
//! (namespace, pod, container, node, stream, service_name, path), with pod
//! labels and the container id as structured metadata, as Loki's
//! cardinality advice has it.

use prost::Message;

use super::batch::Batch;
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
    fn split(&self, labels: &Labels) -> (Labels, Vec<proto::LabelPairAdapter>) {
        let mut stream: Vec<(String, String)> = self.extra.clone();
        let mut metadata = Vec::new();
        for (name, value) in labels.iter() {
            if self.stream.iter().any(|s| s == name) {
                stream.push((name.to_owned(), value.to_owned()));
            } else {
                metadata.push(proto::LabelPairAdapter {
                    name: name.to_owned(),
                    value: value.to_owned(),
                });
            }
        }
        (Labels::new(stream), metadata)
    }
}

/// `batch` as a `PushRequest` (its lines move into it).
pub fn request(batch: &mut Batch, labels: &LokiLabels) -> proto::PushRequest {
    proto::PushRequest {
        streams: batch
            .streams
            .iter_mut()
            .map(|stream| {
                let (stream_labels, metadata) = labels.split(&stream.labels);
                proto::StreamAdapter {
                    // Prometheus text form, as Loki parses it.
                    labels: stream_labels.to_string(),
                    entries: stream
                        .items
                        .iter_mut()
                        .map(|item| proto::EntryAdapter {
                            timestamp: Some(prost_types::Timestamp {
                                seconds: item.ts.div_euclid(1_000_000_000),
                                nanos: item.ts.rem_euclid(1_000_000_000) as i32,
                            }),
                            line: match String::from_utf8(std::mem::take(&mut item.line)) {
                                Ok(line) => line,
                                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                            },
                            structured_metadata: metadata.clone(),
                            parsed: Vec::new(),
                        })
                        .collect(),
                    hash: 0,
                }
            })
            .collect(),
        format: String::new(),
    }
}

/// The snappy-compressed protobuf body of `batch` (its lines move into it).
pub fn encode(batch: &mut Batch, labels: &LokiLabels) -> Vec<u8> {
    let raw = request(batch, labels).encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
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
        let names: Vec<&str> = metadata.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["app", "container_id"]);
    }
}
