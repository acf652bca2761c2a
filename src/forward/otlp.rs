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
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::batch::Batch;
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

fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// The resource attributes and log attributes of a stream.
fn attributes(labels: &Labels) -> (Vec<KeyValue>, Vec<KeyValue>) {
    let (mut resource, mut log) = (Vec::new(), Vec::new());
    for (name, value) in labels.iter() {
        if let Some((_, attribute)) = RESOURCE.iter().find(|(l, _)| *l == name) {
            // The runtime's scheme prefix is not part of the id.
            let value = if name == "container_id" {
                value.split_once("://").map_or(value, |(_, id)| id)
            } else {
                value
            };
            resource.push(text(attribute, value));
        } else if name == "stream" {
            log.push(text("log.iostream", value));
        } else if !ALIASES.contains(&name) {
            resource.push(text(&format!("k8s.pod.label.{name}"), value));
        }
    }
    (resource, log)
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

/// `batch` as an `ExportLogsServiceRequest`: one resource per stream.
/// The lines move into the request (the batch keeps its positions).
pub fn request(batch: &mut Batch) -> ExportLogsServiceRequest {
    let scope = InstrumentationScope {
        name: "monitoring-rs".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    };
    ExportLogsServiceRequest {
        resource_logs: batch
            .streams
            .iter_mut()
            .map(|stream| {
                let (resource, log) = attributes(&stream.labels);
                ResourceLogs {
                    resource: Some(Resource {
                        attributes: resource,
                        ..Resource::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope.clone()),
                        log_records: stream
                            .items
                            .iter_mut()
                            .map(|item| {
                                let (number, text) = severity(item.level);
                                let line = std::mem::take(&mut item.line);
                                let body = match String::from_utf8(line) {
                                    Ok(s) => any_value::Value::StringValue(s),
                                    Err(e) => any_value::Value::BytesValue(e.into_bytes()),
                                };
                                LogRecord {
                                    time_unix_nano: item.ts.max(0) as u64,
                                    observed_time_unix_nano: item.observed.max(0) as u64,
                                    severity_number: number as i32,
                                    severity_text: text.into(),
                                    body: Some(AnyValue { value: Some(body) }),
                                    attributes: log.clone(),
                                    ..LogRecord::default()
                                }
                            })
                            .collect(),
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                }
            })
            .collect(),
    }
}

/// The protobuf body of `batch` (its lines move into it).
pub fn encode(batch: &mut Batch) -> Vec<u8> {
    request(batch).encode_to_vec()
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
    use super::*;

    #[test]
    fn kubernetes_labels_follow_the_semantic_conventions() {
        let labels = Labels::new([
            ("namespace", "shop"),
            ("pod_name", "web-1"),
            ("pod", "web-1"),
            ("container_name", "app"),
            ("container_id", "containerd://abc"),
            ("node_name", "node-1"),
            ("stream", "stderr"),
            ("service_name", "web"),
            ("app", "web"),
        ]);
        let (resource, log) = attributes(&labels);
        let find = |list: &[KeyValue], key: &str| {
            list.iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| match &kv.value {
                    Some(AnyValue {
                        value: Some(any_value::Value::StringValue(s)),
                    }) => Some(s.clone()),
                    _ => None,
                })
        };
        assert_eq!(
            find(&resource, "k8s.namespace.name").as_deref(),
            Some("shop")
        );
        assert_eq!(find(&resource, "container.id").as_deref(), Some("abc"));
        assert_eq!(find(&resource, "service.name").as_deref(), Some("web"));
        assert_eq!(find(&resource, "k8s.pod.label.app").as_deref(), Some("web"));
        assert_eq!(find(&log, "log.iostream").as_deref(), Some("stderr"));
        assert!(find(&resource, "k8s.pod.label.pod").is_none());
        assert_eq!(severity(Level::Warn).0, SeverityNumber::Warn);
    }
}
