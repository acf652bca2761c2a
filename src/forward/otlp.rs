//! OTLP/HTTP logs (protobuf), with the OpenTelemetry semantic conventions
//! for Kubernetes: a stream's labels become resource attributes
//! (`k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`,
//! `k8s.node.name`, `container.id`, `service.name`, pod labels as
//! `k8s.pod.label.<name>`, `log.file.path`), `stream` the log attribute
//! `log.iostream`, the line the body, the detected level the severity.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::batch::{Batch, Item, Stream};
use super::reuse::{Pool, fit, set, set_bytes};
use crate::log_database::labels::Labels;
use crate::log_database::level::Level;

/// A stream label and the resource attribute it becomes.
const RESOURCE: &[(&str, &str)] = &[
    ("namespace", "k8s.namespace.name"),
    ("pod_name", "k8s.pod.name"),
    ("pod_uid", "k8s.pod.uid"),
    ("container_name", "k8s.container.name"),
    ("node_name", "k8s.node.name"),
    ("container_id", "container.id"),
    ("service_name", "service.name"),
    ("path", "log.file.path"),
];

/// Labels that repeat others (Loki's names for Alloy) and add nothing.
const ALIASES: &[&str] = &["pod", "container"];

/// Sets `value` to the string `text`, reusing its buffer.
fn string_value(value: &mut Option<AnyValue>, text: &str) {
    match value {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        }) => set(s, text),
        other => {
            *other = Some(AnyValue {
                value: Some(any_value::Value::StringValue(text.to_owned())),
            })
        }
    }
}

/// Sets `value` to a line: a string when it is UTF-8 (as it nearly always
/// is), else bytes, as OTLP allows.
fn body_value(value: &mut Option<AnyValue>, line: &[u8]) {
    match std::str::from_utf8(line) {
        Ok(text) => string_value(value, text),
        Err(_) => match value {
            Some(AnyValue {
                value: Some(any_value::Value::BytesValue(b)),
            }) => set_bytes(b, line),
            other => {
                *other = Some(AnyValue {
                    value: Some(any_value::Value::BytesValue(line.to_vec())),
                })
            }
        },
    }
}

/// Attribute `n` of `list` (added when missing) set to `key` (its parts
/// joined) and `value`; `n` moves past it.
fn put(list: &mut Vec<KeyValue>, n: &mut usize, key: &[&str], value: &str) {
    if *n == list.len() {
        list.push(KeyValue::default());
    }
    let attribute = &mut list[*n];
    *n += 1;
    attribute.key.clear();
    for part in key {
        attribute.key.push_str(part);
    }
    string_value(&mut attribute.value, value);
}

/// Fills `resource` with the resource attributes of a stream (its
/// `stream`, `log.iostream`, is a log attribute: each record has it).
fn attributes(labels: &Labels, resource: &mut Vec<KeyValue>) {
    let mut n = 0;
    for (name, value) in labels.iter() {
        if let Some((_, attribute)) = RESOURCE.iter().find(|(l, _)| *l == name) {
            // The runtime's scheme prefix is not part of the id.
            let value = if name == "container_id" {
                value.split_once("://").map_or(value, |(_, id)| id)
            } else {
                value
            };
            put(resource, &mut n, &[attribute], value);
        } else if name != "stream" && !ALIASES.contains(&name) {
            put(resource, &mut n, &["k8s.pod.label.", name], value);
        }
    }
    resource.truncate(n);
}

/// The OpenTelemetry severity of a detected level.
fn severity(level: Level) -> (SeverityNumber, &'static str) {
    match level {
        Level::Unknown => (SeverityNumber::Unspecified, ""),
        Level::Trace => (SeverityNumber::Trace, "TRACE"),
        Level::Debug => (SeverityNumber::Debug, "DEBUG"),
        Level::Info => (SeverityNumber::Info, "INFO"),
        Level::Warn => (SeverityNumber::Warn, "WARN"),
        Level::Error => (SeverityNumber::Error, "ERROR"),
        Level::Critical => (SeverityNumber::Fatal, "CRITICAL"),
        Level::Fatal => (SeverityNumber::Fatal, "FATAL"),
    }
}

/// Builds OTLP request bodies, each in the last one's buffers.
#[derive(Debug, Default)]
pub struct Encoder {
    request: ExportLogsServiceRequest,
    raw: Vec<u8>,
    resources: Pool<ResourceLogs>,
    records: Pool<LogRecord>,
    /// Resource key → resource index, for the batch in hand.
    groups: std::collections::HashMap<u64, usize>,
    /// (resource index, stream index), for the batch in hand.
    order: Vec<(usize, usize)>,
}

impl Encoder {
    /// The protobuf `ExportLogsServiceRequest` of `batch`.
    pub fn encode(&mut self, batch: &Batch) -> &[u8] {
        self.fill(batch);
        self.raw.clear();
        // Into a growable buffer, encoding cannot fail.
        let _ = self.request.encode(&mut self.raw);
        &self.raw
    }

    /// Fills the request with `batch`: one resource per container, its
    /// stdout and stderr streams together (`log.iostream` tells their
    /// records apart), so that a receiver gets each resource once.
    fn fill(&mut self, batch: &Batch) {
        self.groups.clear();
        self.order.clear();
        for (i, stream) in batch.streams.iter().enumerate() {
            let resource = resource_key(&stream.labels);
            let next = self.groups.len();
            let group = *self.groups.entry(resource).or_insert(next);
            self.order.push((group, i));
        }
        // Grouped, each group's streams in batch order.
        self.order.sort_unstable();
        let n = self.groups.len();
        let resource_logs = &mut self.request.resource_logs;
        // Resources not needed now keep no records: other resources take
        // them.
        for resource in resource_logs.iter_mut().skip(n) {
            for scope in &mut resource.scope_logs {
                self.records.give(&mut scope.log_records);
            }
        }
        let resources = self.resources.fit(resource_logs, n);
        let groups = self.order.chunk_by(|a, b| a.0 == b.0);
        for (resource_logs, group) in resources.iter_mut().zip(groups) {
            let streams = group.iter().map(|&(_, i)| &batch.streams[i]);
            fill_resource(resource_logs, streams, batch, &mut self.records);
        }
    }
}

/// What the streams of one resource share: every label but `stream`.
fn resource_key(labels: &Labels) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, value) in labels.iter().filter(|(name, _)| *name != "stream") {
        hasher.update(name.as_bytes());
        hasher.update(&[0xff]);
        hasher.update(value.as_bytes());
        hasher.update(&[0xfe]);
    }
    hasher.digest()
}

/// Fills `resource_logs` with the streams of one resource.
fn fill_resource<'a>(
    resource_logs: &mut ResourceLogs,
    streams: impl Iterator<Item = &'a Stream> + Clone,
    batch: &Batch,
    pool: &mut Pool<LogRecord>,
) {
    let Some(first) = streams.clone().next() else {
        return;
    };
    let resource = resource_logs.resource.get_or_insert_with(Resource::default);
    // The streams differ in `stream` alone, which each record carries.
    attributes(&first.labels, &mut resource.attributes);
    let scope_logs = &mut fit(&mut resource_logs.scope_logs, 1)[0];
    let scope = scope_logs
        .scope
        .get_or_insert_with(InstrumentationScope::default);
    set(&mut scope.name, "monitoring-rs");
    set(&mut scope.version, env!("CARGO_PKG_VERSION"));
    let total = streams.clone().map(|s| s.items.len()).sum();
    let mut records = pool.fit(&mut scope_logs.log_records, total).iter_mut();
    for stream in streams {
        let iostream = stream.labels.get("stream");
        // Items first: zip takes from its first side before it ends.
        for (item, record) in stream.items.iter().zip(records.by_ref()) {
            fill_record(record, item, iostream, batch);
        }
    }
}

/// Fills `record` with `item`, a line of `batch` from the `iostream` stream.
fn fill_record(record: &mut LogRecord, item: &Item, iostream: Option<&str>, batch: &Batch) {
    let (number, text) = severity(item.level);
    record.time_unix_nano = item.ts.max(0) as u64;
    record.observed_time_unix_nano = item.observed.max(0) as u64;
    record.severity_number = number as i32;
    set(&mut record.severity_text, text);
    body_value(&mut record.body, batch.line(item));
    let mut n = 0;
    if let Some(iostream) = iostream {
        put(&mut record.attributes, &mut n, &["log.iostream"], iostream);
    }
    record.attributes.truncate(n);
}

/// Records the receiver rejected in a successful answer (OTLP's partial
/// success), and its message.
pub fn rejected(body: &[u8]) -> Option<(u64, String)> {
    let response = ExportLogsServiceResponse::decode(body).ok()?;
    let partial = response.partial_success?;
    (partial.rejected_log_records > 0)
        .then_some((partial.rejected_log_records as u64, partial.error_message))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::forward::cursor::Cursor;

    fn find(list: &[KeyValue], key: &str) -> Option<String> {
        list.iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match &kv.value {
                Some(AnyValue {
                    value: Some(any_value::Value::StringValue(s)),
                }) => Some(s.clone()),
                _ => None,
            })
    }

    #[test]
    fn kubernetes_labels_follow_the_semantic_conventions() {
        let labels = Arc::new(Labels::new([
            ("namespace", "shop"),
            ("pod_name", "web-1"),
            ("pod", "web-1"),
            ("container_name", "app"),
            ("container_id", "containerd://abc"),
            ("node_name", "node-1"),
            ("stream", "stderr"),
            ("service_name", "web"),
            ("app", "web"),
        ]));
        let other = Arc::new(Labels::new([("namespace", "db"), ("stream", "stdout")]));
        let mut encoder = Encoder::default();
        let cursor = Cursor::default();
        // A larger batch first: the second is built in its buffers and
        // must carry nothing over.
        let mut batch = Batch::default();
        let (i, j) = (
            batch.stream(&cursor, &labels, 1),
            batch.stream(&cursor, &other, 2),
        );
        batch.push(i, 5, 6, Level::Info, b"a");
        batch.push(i, 7, 8, Level::Info, b"b");
        batch.push(j, 9, 10, Level::Error, b"c");
        encoder.encode(&batch);
        batch.clear(1 << 20);
        let i = batch.stream(&cursor, &labels, 1);
        batch.push(i, 11, 12, Level::Warn, b"bad \xff");
        // The container's stdout joins its stderr in one resource.
        let stdout = Arc::new(Labels::new(
            labels
                .iter()
                .map(|(n, v)| (n, if n == "stream" { "stdout" } else { v })),
        ));
        let o = batch.stream(&cursor, &stdout, 3);
        batch.push(o, 13, 14, Level::Info, b"out");
        let request = ExportLogsServiceRequest::decode(encoder.encode(&batch)).unwrap();
        assert_eq!(request.resource_logs.len(), 1);
        let resource = &request.resource_logs[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes;
        assert_eq!(
            find(resource, "k8s.namespace.name").as_deref(),
            Some("shop")
        );
        assert_eq!(find(resource, "container.id").as_deref(), Some("abc"));
        assert_eq!(find(resource, "service.name").as_deref(), Some("web"));
        assert_eq!(find(resource, "k8s.pod.label.app").as_deref(), Some("web"));
        assert!(find(resource, "k8s.pod.label.pod").is_none());
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(records.len(), 2);
        assert_eq!(
            find(&records[1].attributes, "log.iostream").as_deref(),
            Some("stdout")
        );
        assert_eq!(records[1].time_unix_nano, 13);
        let record = &records[0];
        assert_eq!(
            find(&record.attributes, "log.iostream").as_deref(),
            Some("stderr")
        );
        assert_eq!(
            (record.time_unix_nano, record.observed_time_unix_nano),
            (11, 12)
        );
        assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(record.severity_text, "WARN");
        assert_eq!(
            record.body,
            Some(AnyValue {
                value: Some(any_value::Value::BytesValue(b"bad \xff".to_vec()))
            })
        );
    }
}
