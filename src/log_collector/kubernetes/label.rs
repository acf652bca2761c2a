//! Stage 4, labelling: the label set of a (source, stream) — the built-in
//! Kubernetes labels from the file name, plus the pod's labels and chosen
//! annotations when its metadata is known. Built once per pod version and
//! shared after that (a store stream clones its `Arc`, not its strings).

use std::collections::HashMap;

use super::decode::Stream;
use super::metadata::PodInfo;
use super::names::FileIdentity;
use crate::log_database::StreamEntries;
use crate::log_database::labels::{Labels, sanitize_name};

/// Which pod labels and annotations become stream labels.
#[derive(Clone, Debug, Default)]
pub(super) struct LabelRules {
    /// This node's name (the `node_name` label).
    pub(super) node_name: String,
    /// Pod labels to keep (all when empty).
    pub(super) include_labels: Vec<String>,
    /// Pod labels to drop.
    pub(super) exclude_labels: Vec<String>,
    /// Pod annotations that become labels.
    pub(super) include_annotations: Vec<String>,
}

/// A source's label sets by stream, with the pod version each was built
/// from, as empty store streams to clone (which shares the label set).
#[derive(Default)]
pub(super) struct LabelCache {
    by_stream: HashMap<Stream, (String, StreamEntries)>,
}

impl LabelCache {
    /// An empty store stream for `stream`, labelled for `pod` (or from the
    /// file name alone).
    pub(super) fn stream(
        &mut self,
        identity: &FileIdentity,
        pod: Option<&PodInfo>,
        stream: Stream,
        rules: &LabelRules,
    ) -> StreamEntries {
        let version = pod.map_or("", |p| p.version.as_str());
        if let Some((v, labels)) = self.by_stream.get(&stream)
            && v == version
        {
            return labels.clone();
        }
        let labels = StreamEntries::new(label_set(identity, pod, stream, rules));
        self.by_stream
            .insert(stream, (version.to_owned(), labels.clone()));
        labels
    }
}

/// The labels of `identity`'s `stream`: pod labels and annotations by the
/// rules, then the built-in labels, which win over pod labels of the same name.
pub(super) fn label_set(
    identity: &FileIdentity,
    pod: Option<&PodInfo>,
    stream: Stream,
    rules: &LabelRules,
) -> Labels {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(pod) = pod {
        for (name, value) in &pod.labels {
            let name = sanitize_name(name);
            let included = rules.include_labels.is_empty()
                || rules
                    .include_labels
                    .iter()
                    .any(|l| sanitize_name(l) == name);
            let excluded = rules
                .exclude_labels
                .iter()
                .any(|l| sanitize_name(l) == name);
            if included && !excluded {
                pairs.push((name, value.clone()));
            }
        }
        for name in &rules.include_annotations {
            if let Some(value) = pod.annotations.get(name) {
                pairs.push((sanitize_name(name), value.clone()));
            }
        }
    }
    pairs.push(("namespace".into(), identity.namespace.clone()));
    pairs.push(("pod_name".into(), identity.pod.clone()));
    pairs.push(("container_name".into(), identity.container.clone()));
    // The names Loki's own Kubernetes integrations (Alloy, Promtail) give
    // them, so queries and dashboards written for those work here.
    pairs.push(("pod".into(), identity.pod.clone()));
    pairs.push(("container".into(), identity.container.clone()));
    pairs.push((
        "container_id".into(),
        identity.container_id.clone().unwrap_or_default(),
    ));
    pairs.push(("node_name".into(), rules.node_name.clone()));
    pairs.push(("stream".into(), stream.as_str().into()));
    crate::log_collector::service_name::discover(&mut pairs);
    Labels::new(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn identity() -> FileIdentity {
        FileIdentity {
            namespace: "shop".into(),
            pod: "web-1".into(),
            container: "nginx".into(),
            container_id: Some("abc".into()),
            pod_uid: None,
        }
    }

    fn pod(version: &str, labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            uid: "uid".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::from([("team.example.com/owner".into(), "payments".into())]),
            node: None,
            version: version.into(),
            deleted_at: None,
        }
    }

    #[test]
    fn built_in_labels_win_and_rules_choose_pod_labels() {
        let rules = LabelRules {
            node_name: "node-1".into(),
            exclude_labels: vec!["pod-template-hash".into()],
            include_annotations: vec!["team.example.com/owner".into()],
            ..Default::default()
        };
        let pod = pod(
            "1",
            &[
                ("app.kubernetes.io/name", "web"),
                ("pod-template-hash", "x"),
                ("namespace", "spoofed"),
            ],
        );
        let labels = label_set(&identity(), Some(&pod), Stream::Stderr, &rules);
        assert_eq!(labels.get("app_kubernetes_io_name"), Some("web"));
        assert_eq!(labels.get("pod_template_hash"), None);
        assert_eq!(labels.get("team_example_com_owner"), Some("payments"));
        assert_eq!(labels.get("namespace"), Some("shop"));
        assert_eq!(labels.get("stream"), Some("stderr"));
        assert_eq!(labels.get("node_name"), Some("node-1"));
        assert_eq!(labels.get("pod"), Some("web-1"));
        assert_eq!(labels.get("container"), Some("nginx"));
        assert_eq!(
            labels.get("service_name"),
            Some("web"),
            "app_kubernetes_io_name"
        );
        let plain = label_set(
            &identity(),
            Some(&self::pod("1", &[])),
            Stream::Stdout,
            &rules,
        );
        assert_eq!(plain.get("service_name"), Some("nginx"), "the container");
        // Without metadata: the file name's labels only.
        let bare = label_set(&identity(), None, Stream::Stdout, &rules);
        assert_eq!(bare.get("app_kubernetes_io_name"), None);
        assert_eq!(bare.get("container_id"), Some("abc"));
    }

    #[test]
    fn a_label_set_is_shared_until_the_pod_changes() {
        let rules = LabelRules::default();
        let mut cache = LabelCache::default();
        let v1 = pod("1", &[("app", "web")]);
        let a = cache.stream(&identity(), Some(&v1), Stream::Stdout, &rules);
        let b = cache.stream(&identity(), Some(&v1), Stream::Stdout, &rules);
        assert!(Arc::ptr_eq(a.labels(), b.labels()));
        let v2 = pod("2", &[("app", "web-v2")]);
        let c = cache.stream(&identity(), Some(&v2), Stream::Stdout, &rules);
        assert_eq!(c.labels().get("app"), Some("web-v2"));
    }
}
